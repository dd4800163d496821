import type { Config } from '@backstage/config';
import { JitgateClient } from './api';
import { callerHeaders, type TokenSource } from './identity';

/** The client the plugin registers, from app-config `jitgate.pages` (see config.d.ts). */
export function jitgateClientFrom(config: Config, microsoft: TokenSource | undefined): JitgateClient {
  const pages = config.getOptionalConfig('jitgate.pages');
  const auth = pages?.getOptionalString('auth') ?? 'entra';
  if (auth !== 'entra' && auth !== 'development') {
    throw new Error(`jitgate.pages.auth must be entra or development, not ${JSON.stringify(auth)}`);
  }
  const storage = typeof window === 'undefined' ? undefined : window.localStorage;
  return new JitgateClient({
    baseUrl: pages?.getOptionalString('baseUrl') ?? '',
    callerHeaders: callerHeaders({
      auth,
      scope: pages?.getOptionalString('scope'),
      devPrincipal: pages?.getOptionalString('devPrincipal'),
      devRoles: pages?.getOptionalString('devRoles'),
    }, microsoft, storage),
  });
}
