import type { RootConfigService } from '@backstage/backend-plugin-api';
import { DefaultAzureCredential } from '@azure/identity';
import { isGuid, NIL_GUID, principalIdProblem } from './accessRequest';
import { HttpSender, INTAKE_PATH } from './httpSender';
import type { AccessRequestSender } from './sender';
import { ServiceBusSender } from './serviceBusSender';

export const DEFAULT_QUEUE = 'access-requests';

/** The `jitgate:` block of app-config, read once at backend start (schema: config.d.ts). */
export type JitgateSettings = {
  /** Base of the links to `GET /api/access-requests/{id}`. */
  statusBaseUrl: string;
} & (
  | { transport: 'servicebus'; serviceBus: { namespace: string; queue: string } }
  | { transport: 'http'; http: { baseUrl: string; tokenScope?: string; devPrincipal?: string } }
);

/** A `jitgate:` block that cannot work; the backend refuses to start with it. */
export class InvalidJitgateConfig extends Error {
  override name = 'InvalidJitgateConfig';
}

export function readJitgateSettings(config: RootConfigService): JitgateSettings {
  const jitgate = config.getOptionalConfig('jitgate');
  if (!jitgate) {
    throw new InvalidJitgateConfig(
      "The jitgate scaffolder module needs a 'jitgate:' block in app-config (transport: servicebus or http); see backstage/README.md",
    );
  }
  const transport = jitgate.getOptionalString('transport');
  const statusBaseUrl = jitgate.getOptionalString('statusBaseUrl');
  if (transport === 'servicebus') {
    if (!statusBaseUrl) {
      throw new InvalidJitgateConfig('jitgate.statusBaseUrl is required with transport servicebus: it is where users follow their request');
    }
    return {
      transport,
      statusBaseUrl: baseUrl('jitgate.statusBaseUrl', statusBaseUrl),
      serviceBus: {
        namespace: namespaceOf(jitgate.getString('serviceBus.namespace')),
        queue: jitgate.getOptionalString('serviceBus.queue') ?? DEFAULT_QUEUE,
      },
    };
  }
  if (transport === 'http') {
    const intake = baseUrl('jitgate.http.baseUrl', jitgate.getString('http.baseUrl'));
    const tokenScope = jitgate.getOptionalString('http.tokenScope');
    const devPrincipal = jitgate.getOptionalString('http.devPrincipal')?.trim().toLowerCase();
    if (tokenScope && devPrincipal) {
      throw new InvalidJitgateConfig('Set jitgate.http.tokenScope (jitgate in Azure) or jitgate.http.devPrincipal (local jitgate), not both');
    }
    if (devPrincipal !== undefined && !isGuid(devPrincipal)) {
      throw new InvalidJitgateConfig(`jitgate.http.devPrincipal must be an Entra object id (GUID), not '${devPrincipal}'`);
    }
    if (devPrincipal === NIL_GUID) {
      throw new InvalidJitgateConfig(`jitgate.http.devPrincipal ${principalIdProblem(devPrincipal)}`);
    }
    return {
      transport,
      statusBaseUrl: statusBaseUrl ? baseUrl('jitgate.statusBaseUrl', statusBaseUrl) : intake,
      http: { baseUrl: intake, ...(tokenScope && { tokenScope }), ...(devPrincipal && { devPrincipal }) },
    };
  }
  throw new InvalidJitgateConfig(`jitgate.transport must be 'servicebus' or 'http', not ${JSON.stringify(transport ?? null)}`);
}

/** The sender the settings call for. */
export function createSender(settings: JitgateSettings): AccessRequestSender {
  if (settings.transport === 'servicebus') {
    return new ServiceBusSender(settings.serviceBus);
  }
  const { baseUrl: intake, tokenScope, devPrincipal } = settings.http;
  return new HttpSender({
    baseUrl: intake,
    ...(tokenScope && { token: { credential: new DefaultAzureCredential(), scope: tokenScope } }),
    ...(devPrincipal && { devPrincipal }),
  });
}

/** Where a request's state can be read: `GET /api/access-requests/{id}`. */
export function statusUrlOf(settings: Pick<JitgateSettings, 'statusBaseUrl'>, requestId: string): string {
  return `${settings.statusBaseUrl}${INTAKE_PATH}/${requestId}`;
}

function baseUrl(key: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidJitgateConfig(`${key} must be an absolute http(s) URL, not '${value}'`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InvalidJitgateConfig(`${key} must be an absolute http(s) URL, not '${value}'`);
  }
  if (url.search || url.hash) {
    throw new InvalidJitgateConfig(`${key} must not carry a query or fragment: '${value}'`);
  }
  return url.toString().replace(/\/+$/, '');
}

// NB. Only the host name: jitgate signs in with managed identity, never a connection string.
function namespaceOf(value: string): string {
  if (/SharedAccessKey|Endpoint=/i.test(value)) {
    throw new InvalidJitgateConfig(
      'jitgate.serviceBus.namespace must be a namespace host name, not a connection string: jitgate signs in with DefaultAzureCredential',
    );
  }
  const host = value.trim().toLowerCase();
  if (!/^[a-z][a-z0-9-]{4,48}[a-z0-9]\.servicebus\.[a-z0-9.-]+[a-z]$/.test(host)) {
    throw new InvalidJitgateConfig(
      `jitgate.serviceBus.namespace must be the fully qualified namespace, such as jitgate-prod.servicebus.windows.net, not '${value}'`,
    );
  }
  return host;
}
