import { mockServices } from '@backstage/backend-test-utils';
import type { JsonObject } from '@backstage/types';
import { HttpSender } from './httpSender';
import { ServiceBusSender } from './serviceBusSender';
import { createSender, readJitgateSettings, statusUrlOf } from './settings';

const settingsOf = (jitgate?: JsonObject) =>
  readJitgateSettings(mockServices.rootConfig({ data: jitgate ? { jitgate } : {} }));

describe('jitgate settings', () => {
  it('reads a Service Bus transport, with the default queue', () => {
    const settings = settingsOf({
      transport: 'servicebus',
      serviceBus: { namespace: 'Jitgate-Prod.servicebus.windows.net' },
      statusBaseUrl: 'https://jitgate.example.com/',
    });
    expect(settings).toEqual({
      transport: 'servicebus',
      statusBaseUrl: 'https://jitgate.example.com',
      serviceBus: { namespace: 'jitgate-prod.servicebus.windows.net', queue: 'access-requests' },
    });
    expect(createSender(settings)).toBeInstanceOf(ServiceBusSender);
    expect(createSender(settings).destination).toBe('sb://jitgate-prod.servicebus.windows.net/access-requests');
    expect(statusUrlOf(settings, 'abc')).toBe('https://jitgate.example.com/api/access-requests/abc');
  });

  it('reads an HTTP transport, whose base URL also serves the status links', () => {
    const settings = settingsOf({ transport: 'http', http: { baseUrl: 'http://127.0.0.1:8080/' } });
    expect(settings).toEqual({ transport: 'http', statusBaseUrl: 'http://127.0.0.1:8080', http: { baseUrl: 'http://127.0.0.1:8080' } });
    const sender = createSender(settings);
    expect(sender).toBeInstanceOf(HttpSender);
    expect(sender.destination).toBe('http://127.0.0.1:8080/api/access-requests');
  });

  it('reads the development identity for a local jitgate', () => {
    const settings = settingsOf({ transport: 'http', http: { baseUrl: 'http://127.0.0.1:8080', devPrincipal: '7D3B2A10-5C4E-4F6A-8B9C-0D1E2F3A4B5C' } });
    expect(settings).toMatchObject({ http: { devPrincipal: '7d3b2a10-5c4e-4f6a-8b9c-0d1e2f3a4b5c' } });
  });

  it.each([
    [undefined, "needs a 'jitgate:' block"],
    [{ transport: 'http', http: { baseUrl: 'http://127.0.0.1:8080', devPrincipal: 'jane' } }, 'jitgate.http.devPrincipal must be an Entra object id'],
    [
      { transport: 'http', http: { baseUrl: 'http://127.0.0.1:8080', devPrincipal: '00000000-0000-0000-0000-000000000000' } },
      'jitgate.http.devPrincipal must not be the nil GUID 00000000-0000-0000-0000-000000000000: it names nobody',
    ],
    [
      { transport: 'http', http: { baseUrl: 'https://j.example.com', tokenScope: 'api://jitgate/.default', devPrincipal: '7d3b2a10-5c4e-4f6a-8b9c-0d1e2f3a4b5c' } },
      'not both',
    ],
    [{ transport: 'kafka' }, `jitgate.transport must be 'servicebus' or 'http', not "kafka"`],
    [{ serviceBus: { namespace: 'x.servicebus.windows.net' } }, "jitgate.transport must be 'servicebus' or 'http', not null"],
    [{ transport: 'servicebus', serviceBus: { namespace: 'jitgate-prod.servicebus.windows.net' } }, 'jitgate.statusBaseUrl is required'],
    [
      { transport: 'servicebus', statusBaseUrl: 'https://j.example.com', serviceBus: { namespace: 'Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b' } },
      'not a connection string',
    ],
    [{ transport: 'servicebus', statusBaseUrl: 'https://j.example.com', serviceBus: { namespace: 'jitgate-prod' } }, 'must be the fully qualified namespace'],
    [{ transport: 'http', http: { baseUrl: 'jitgate.example.com' } }, 'jitgate.http.baseUrl must be an absolute http(s) URL'],
    [{ transport: 'http', http: { baseUrl: 'https://j.example.com?x=1' } }, 'must not carry a query'],
  ])('refuses %j', (jitgate, expected) => {
    expect(() => settingsOf(jitgate)).toThrow(expected);
  });

  it('names a missing required key', () => {
    expect(() => settingsOf({ transport: 'http' })).toThrow(/http\.baseUrl/);
  });
});
