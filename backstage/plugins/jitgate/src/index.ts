/**
 * jitgate's Backstage pages. The legacy frontend system's exports are here; the new frontend system's plugin is the
 * default export of `@jitgate/backstage-plugin-jitgate/alpha`.
 */
export { jitgatePlugin, JitgatePage, EntityJitgateContent } from './plugin';
export { hasJitgateTargets } from './targets';
export { jitgateApiRef, JitgateClient, JitgateError } from './api';
export type { AccessRequestView, JitgateApi, ListFilter, AuditFilter, Outcome, Verification } from './api';
export { rootRouteRef as jitgateRouteRef } from './routes';
