/**
 * The smallest Backstage app that shows the pages: the new frontend system's `createApp` with this plugin and nothing
 * else, its config given inline. `node dev/build.mjs` bundles it into dev/build/; the browser test
 * (tests/e2e/test_backstage_pages.py) serves that next to a running `jitgate serve`.
 */
import React from 'react';
import ReactDOM from 'react-dom/client';
import { createApp } from '@backstage/frontend-defaults';
import { ConfigReader } from '@backstage/config';
import jitgatePlugin from '../src/alpha';

declare const JITGATE_DEV_CONFIG: Record<string, unknown>;

const app = createApp({
  features: [jitgatePlugin],
  advanced: {
    configLoader: async () => ({
      config: new ConfigReader({
        app: { title: 'jitgate dev app', baseUrl: window.location.origin },
        backend: { baseUrl: window.location.origin },
        ...JITGATE_DEV_CONFIG,
      }),
    }),
  },
});

ReactDOM.createRoot(document.getElementById('root')!).render(app.createRoot());
