import '@testing-library/jest-dom';

// NB. jsdom cannot parse the nested CSS that Backstage UI injects, and says so for every stylesheet; that says
// nothing about the code under test, so only that one message is dropped.
const consoleError = console.error;
console.error = (...args: unknown[]) => {
  if (String(args[0]).includes('Could not parse CSS stylesheet')) return;
  consoleError(...args);
};
