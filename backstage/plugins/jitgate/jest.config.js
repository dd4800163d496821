/** Jest with swc, as Backstage's own CLI runs frontend tests. Style and image imports resolve to nothing. */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/src'],
  setupFilesAfterEnv: ['<rootDir>/src/setupTests.ts'],
  transform: {
    '^.+\\.(t|j)sx?$|\\.mjs$': ['@swc/jest', {
      jsc: { parser: { syntax: 'typescript', tsx: true }, transform: { react: { runtime: 'automatic' } } },
      module: { type: 'commonjs' },
    }],
  },
  // NB. Everything, node_modules too: Backstage's packages and some of theirs (@azure/identity's browser build) are
  // ES modules only. swc makes that a few seconds, once; jest caches it.
  transformIgnorePatterns: [],
  moduleNameMapper: { '\\.(css|svg|png|jpg)$': '<rootDir>/src/testing/assetStub.js' },
  testTimeout: 30000,
};
