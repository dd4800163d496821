/**
 * The plugin for Backstage's new frontend system: `import jitgatePlugin from '@jitgate/backstage-plugin-jitgate/alpha'`
 * and add it to `createApp({ features: [...] })` (or let feature discovery find it).
 */
import React from 'react';
import {
  ApiBlueprint,
  PageBlueprint,
  configApiRef,
  createFrontendPlugin,
  microsoftAuthApiRef,
} from '@backstage/frontend-plugin-api';
import { EntityContentBlueprint } from '@backstage/plugin-catalog-react/alpha';
import { jitgateApiRef } from './api';
import { jitgateClientFrom } from './client';
import { rootRouteRef } from './routes';
import { hasJitgateTargets } from './targets';

export const jitgateApi = ApiBlueprint.make({
  params: defineParams => defineParams({
    api: jitgateApiRef,
    deps: { configApi: configApiRef, microsoftAuthApi: microsoftAuthApiRef },
    factory: ({ configApi, microsoftAuthApi }) => jitgateClientFrom(configApi, microsoftAuthApi),
  }),
});

/** The Access page: My access, Waiting for me, Audit, and each request's page at `/jitgate/requests/<id>`. */
export const jitgateAccessPage = PageBlueprint.make({
  params: {
    path: '/jitgate',
    title: 'Access',
    routeRef: rootRouteRef,
    noHeader: true, // NB. the page has its own heading, in both frontend systems
    loader: () => import('./components/AccessPage').then(m => <m.AccessPage />),
  },
});

/** The entity tab on catalog entities with jitgate annotations: who holds access now, and a request button. */
export const jitgateEntityContent = EntityContentBlueprint.make({
  params: {
    path: 'access',
    title: 'Access',
    filter: hasJitgateTargets,
    loader: () => import('./components/EntityAccessContent').then(m => <m.EntityAccessContent />),
  },
});

export default createFrontendPlugin({
  pluginId: 'jitgate',
  title: 'Access',
  routes: { root: rootRouteRef },
  extensions: [jitgateApi, jitgateAccessPage, jitgateEntityContent],
});
