/** The plugin for Backstage's legacy frontend system (`App.tsx` routes and the entity page's tabs). */
import {
  configApiRef,
  createApiFactory,
  createComponentExtension,
  createPlugin,
  createRoutableExtension,
  microsoftAuthApiRef,
} from '@backstage/core-plugin-api';
import { jitgateApiRef } from './api';
import { jitgateClientFrom } from './client';
import { rootRouteRef } from './routes';

export const jitgatePlugin = createPlugin({
  id: 'jitgate',
  routes: { root: rootRouteRef },
  apis: [
    createApiFactory({
      api: jitgateApiRef,
      deps: { configApi: configApiRef, microsoftAuthApi: microsoftAuthApiRef },
      factory: ({ configApi, microsoftAuthApi }) => jitgateClientFrom(configApi, microsoftAuthApi),
    }),
  ],
});

/** `<Route path="/jitgate" element={<JitgatePage />} />` in App.tsx. */
export const JitgatePage = jitgatePlugin.provide(
  createRoutableExtension({
    name: 'JitgatePage',
    component: () => import('./components/AccessPage').then(m => m.AccessPage),
    mountPoint: rootRouteRef,
  }),
);

/** `<EntityLayout.Route path="/access" title="Access" if={hasJitgateTargets}><EntityJitgateContent /></…>`. */
export const EntityJitgateContent = jitgatePlugin.provide(
  createComponentExtension({
    name: 'EntityJitgateContent',
    component: { lazy: () => import('./components/EntityAccessContent').then(m => m.EntityAccessContent) },
  }),
);
