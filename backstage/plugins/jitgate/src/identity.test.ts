/**
 * @jest-environment node
 */
import { JitgateClient, JitgateError } from './api';
import { callerHeaders } from './identity';

test('entra: every call carries the person\'s own token for jitgate\'s scope', async () => {
  const scopes: unknown[] = [];
  const microsoft = { getAccessToken: async (scope?: string | string[]) => { scopes.push(scope); return 'tok'; } };
  const headers = callerHeaders({ auth: 'entra', scope: 'api://app/access_as_user' }, microsoft, undefined);
  expect(await headers()).toEqual({ Authorization: 'Bearer tok' });
  expect(scopes).toEqual(['api://app/access_as_user']);
});

test('entra without a scope or a Microsoft sign-in says what to configure', async () => {
  await expect(callerHeaders({ auth: 'entra' }, undefined, undefined)()).rejects.toThrow('jitgate.pages.scope');
  await expect(callerHeaders({ auth: 'entra', scope: 's' }, undefined, undefined)()).rejects.toThrow('microsoftAuthApiRef');
});

test('development: the configured identity, which local storage may switch', async () => {
  const stored: Record<string, string> = {};
  const storage = { getItem: (key: string) => stored[key] ?? null };
  const headers = callerHeaders({ auth: 'development', devPrincipal: 'jane', devRoles: 'Jit.Auditor' }, undefined, storage);
  expect(await headers()).toEqual({ 'X-Jitgate-Dev-Principal': 'jane', 'X-Jitgate-Dev-Roles': 'Jit.Auditor' });
  stored['jitgate.devPrincipal'] = 'alice';
  stored['jitgate.devRoles'] = '';
  expect(await headers()).toEqual({ 'X-Jitgate-Dev-Principal': 'alice' });
});

test('the client sends filters and bodies as jitgate reads them, and names its refusals', async () => {
  const sent: Array<[string, RequestInit | undefined]> = [];
  const answers = [
    new Response(JSON.stringify({ requests: [], continuation: null }), { status: 200 }),
    new Response(JSON.stringify({ error: 'forbidden', detail: 'you cannot approve or deny your own request' }),
      { status: 403 }),
  ];
  const client = new JitgateClient({
    baseUrl: 'https://jitgate.example.com/',
    callerHeaders: async () => ({ Authorization: 'Bearer t' }),
    fetch: async (url, init) => { sent.push([String(url), init]); return answers.shift()!; },
  });
  await client.list({ mine: true, state: ['active', 'pending_approval'], scope: '/s/x', limit: 10 });
  expect(sent[0][0]).toBe(
    'https://jitgate.example.com/api/access-requests?mine=true&state=active%2Cpending_approval&scope=%2Fs%2Fx&limit=10');
  const refused = client.approve('r1', 'ok');
  await expect(refused).rejects.toThrow(new JitgateError(403, 'forbidden', 'you cannot approve or deny your own request'));
  expect(sent[1][1]?.method).toBe('POST');
  expect(sent[1][1]?.body).toBe('{"comment":"ok"}');
  expect((sent[1][1]?.headers as Record<string, string>)['Content-Type']).toBe('application/json');
});
