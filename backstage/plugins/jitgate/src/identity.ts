/**
 * Who the pages call jitgate as (docs/architecture.md §7, "The pages' identity chain"). jitgate decides what a caller
 * may do from the identity it verifies itself; nothing the browser claims beyond that counts.
 *
 * - `entra`: the signed-in person's access token for jitgate's app, from Backstage's Microsoft sign-in. In Azure,
 *   App Service authentication validates it (issuer, audience `api://<jitgate app id>`, signature, expiry) before
 *   jitgate sees the request, and hands jitgate the token's claims: the person's object id and app roles. A person
 *   can therefore act only as themselves; Backstage holds no power of its own over approvals.
 * - `development`: jitgate's development identity headers, for a local `jitgate serve` only (jitgate refuses them
 *   in every other mode). The principal may be switched in the browser's local storage (`jitgate.devPrincipal`,
 *   `jitgate.devRoles`) so that one browser can play requester and approver in a local walk-through.
 */
import type { CallerHeaders } from './api';

export interface PagesConfig {
  auth: 'entra' | 'development';
  scope?: string;
  devPrincipal?: string;
  devRoles?: string;
}

export interface TokenSource {
  getAccessToken(scope?: string | string[]): Promise<string>;
}

export const DEV_PRINCIPAL_KEY = 'jitgate.devPrincipal';
export const DEV_ROLES_KEY = 'jitgate.devRoles';

export function callerHeaders(config: PagesConfig, microsoft: TokenSource | undefined,
                              storage: Pick<Storage, 'getItem'> | undefined): CallerHeaders {
  if (config.auth === 'development') {
    return async () => {
      const principal = storage?.getItem(DEV_PRINCIPAL_KEY) || config.devPrincipal;
      if (!principal) {
        throw new Error('jitgate.pages.devPrincipal is not set: say which Entra object id the development identity is');
      }
      const headers: Record<string, string> = { 'X-Jitgate-Dev-Principal': principal };
      const roles = storage?.getItem(DEV_ROLES_KEY) ?? config.devRoles ?? '';
      if (roles) headers['X-Jitgate-Dev-Roles'] = roles;
      return headers;
    };
  }
  const scope = config.scope;
  if (!scope) {
    return async () => {
      throw new Error('jitgate.pages.scope is not set: name the scope of jitgate\'s app, api://<app id>/access_as_user');
    };
  }
  if (!microsoft) {
    return async () => {
      throw new Error('the Microsoft sign-in (microsoftAuthApiRef) is not configured in this Backstage app');
    };
  }
  return async () => ({ Authorization: `Bearer ${await microsoft.getAccessToken(scope)}` });
}
