import { createRouteRef } from '@backstage/core-plugin-api';

/**
 * The Access page (`/jitgate` by default); a request's page is `<it>/requests/<id>`, where Teams cards link. NB. Made
 * with core-plugin-api, whose route refs serve both frontend systems (the legacy export mounts it as is).
 */
export const rootRouteRef = createRouteRef({ id: 'jitgate' });
