import { mockCredentials, mockServices, startTestBackend } from '@backstage/backend-test-utils';
import type { ServiceFactory } from '@backstage/backend-plugin-api';
import type { Entity } from '@backstage/catalog-model';
import type { JsonObject } from '@backstage/types';
import { catalogServiceMock } from '@backstage/plugin-catalog-node/testUtils';
import { scaffolderActionsExtensionPoint, type TemplateAction } from '@backstage/plugin-scaffolder-node';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { scaffolderModuleJitgate } from './module';
import { exampleDatabases } from './testing/catalog';
import { askedFor, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';

const payments: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'payments-api',
    namespace: 'default',
    annotations: {
      'jitgate.io/provider': 'azure-rbac',
      'jitgate.io/scopes':
        '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod,\n' +
        '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-staging\n',
      'jitgate.io/roles': 'Reader, Contributor, Reader',
    },
  },
  spec: { type: 'service', owner: 'group:default/payments', lifecycle: 'production' },
};

const ledger: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: { name: 'ledger', namespace: 'default', annotations: { 'jitgate.io/provider': 'azure-rbac' } },
  spec: { type: 'service', owner: 'group:default/payments', lifecycle: 'production' },
};

const HTTP_CONFIG = { jitgate: { transport: 'http', http: { baseUrl: 'https://jitgate.example.com' } } };

async function startWith(config: JsonObject, extraFeatures: ServiceFactory[] = []) {
  const actions: TemplateAction<any, any, any>[] = [];
  const backend = await startTestBackend({
    extensionPoints: [[scaffolderActionsExtensionPoint, { addActions: (...added) => actions.push(...added) }]],
    features: [
      scaffolderModuleJitgate,
      mockServices.rootConfig.factory({ data: config }),
      catalogServiceMock.factory({ entities: [payments, ledger, ...exampleDatabases()] }),
      ...extraFeatures,
    ],
  });
  return { backend, actions };
}

describe('scaffolder module jitgate', () => {
  it('adds jitgate:access:request to the scaffolder, with dry-run support', async () => {
    const { backend, actions } = await startWith(HTTP_CONFIG);
    expect(actions.map(a => a.id)).toEqual(['jitgate:access:request']);
    expect(actions[0]!.supportsDryRun).toBe(true);
    expect(actions[0]!.schema?.input).toMatchObject({ required: expect.arrayContaining(['target', 'duration', 'justification']) });
    await backend.stop();
  });

  it("gives the action the catalog, so that a database's target comes from its annotations", async () => {
    const { backend, actions } = await startWith({ jitgate: { transport: 'http', http: { baseUrl: 'http://127.0.0.1:9' } } });
    const input = { ...askedFor({ entityRef: 'resource:default/payments-db' }), target: { role: 'payments_write' } };
    const ctx = createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE });
    await actions[0]!.handler({ ...ctx, isDryRun: true });
    expect(Object.fromEntries((ctx.output as jest.Mock).mock.calls).message.target).toEqual({
      provider: 'postgres',
      scope: 'payments-primary/payments',
      role: 'payments_write',
    });
    await backend.stop();
  });

  it('refuses to start on a broken jitgate block, saying what is wrong', async () => {
    await expect(startWith({ jitgate: { transport: 'servicebus' } })).rejects.toThrow('jitgate.statusBaseUrl is required');
  });

  describe('GET /api/scaffolder/jitgate/targets', () => {
    let backend: Awaited<ReturnType<typeof startWith>>['backend'];
    let baseUrl: string;

    beforeAll(async () => {
      ({ backend } = await startWith(HTTP_CONFIG));
      const address = backend.server.address();
      if (typeof address !== 'object' || address === null) throw new Error('test backend has no address');
      baseUrl = `http://127.0.0.1:${address.port}/api/scaffolder/jitgate/targets`;
    });
    afterAll(() => backend.stop());

    const get = (query: string) => fetch(`${baseUrl}${query}`, { headers: { authorization: mockCredentials.user.header() } });

    it("lists the scopes and roles from the component's annotations", async () => {
      const response = await get('?entityRef=component:default/payments-api');
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({
        entityRef: 'component:default/payments-api',
        provider: 'azure-rbac',
        scopes: [
          '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod',
          '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-staging',
        ],
        roles: ['Reader', 'Contributor'],
      });
    });

    it("lists a database's one scope and its roles", async () => {
      const response = await get('?entityRef=resource:default/payments-ledger');
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({
        entityRef: 'resource:default/payments-ledger',
        provider: 'cosmos-data',
        scopes: [expect.stringMatching(/\/dbs\/payments\/colls\/ledger$/)],
        roles: ['Cosmos DB Built-in Data Reader', 'Cosmos DB Built-in Data Contributor'],
      });
    });

    it('names the annotations a component lacks', async () => {
      const response = await get('?entityRef=component:default/ledger');
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { message: string } }).error.message).toBe(
        'component:default/ledger offers no jitgate access: it lacks jitgate.io/scopes, jitgate.io/roles',
      );
    });

    it('answers 404 for an entity not in the catalog and 400 for a malformed ref', async () => {
      expect((await get('?entityRef=component:default/nope')).status).toBe(404);
      expect((await get('?entityRef=a:b:c/d')).status).toBe(400);
      expect((await get('?entityRef=component:default/')).status).toBe(400);
      expect((await get('')).status).toBe(400);
    });
  });

  it('refuses anonymous callers of the targets route', async () => {
    // GIVEN a backend where a request without a token is anonymous, as in production
    const { backend } = await startWith(HTTP_CONFIG, [mockServices.httpAuth.factory({ defaultCredentials: mockCredentials.none() })]);
    const address = backend.server.address();
    if (typeof address !== 'object' || address === null) throw new Error('test backend has no address');
    const url = `http://127.0.0.1:${address.port}/api/scaffolder/jitgate/targets?entityRef=component:default/payments-api`;

    // WHEN it is called without, then with, a user token
    const anonymous = await fetch(url);
    const signedIn = await fetch(url, { headers: { authorization: mockCredentials.user.header() } });

    // THEN only the signed-in user gets the list
    expect(anonymous.status).toBe(401);
    expect(signedIn.status).toBe(200);
    await backend.stop();
  });
});
