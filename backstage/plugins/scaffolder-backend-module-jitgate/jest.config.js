/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }],
  },
  // ts-jest only transpiles (isolatedModules); `npm test` type-checks everything with tsc first.
  verbose: true,
  // CI machines are shared and busy; a test that hangs still fails, just not at the first stall.
  testTimeout: 20_000,
};
