import {
  DefaultNamespaceEntityPolicy,
  EntityPolicies,
  FieldFormatEntityPolicy,
  NoForeignRootFieldsEntityPolicy,
  SchemaValidEntityPolicy,
  componentEntityV1alpha1Validator,
  resourceEntityV1alpha1Validator,
  stringifyEntityRef,
  type Entity,
} from '@backstage/catalog-model';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { buildAccessRequest, validateAccessRequest } from './accessRequest';
import { InvalidAccessRequest } from './errors';
import { createRequestAccessAction } from './requestAccessAction';
import { requesterOf } from './requester';
import { accessTargetsOf, PROVIDER_ANNOTATION, ROLES_ANNOTATION, SCOPES_ANNOTATION } from './targets';
import { exampleDatabases, RecordingCatalog } from './testing/catalog';
import { askedFor, PAYMENTS_RG, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';
import { RecordingSender } from './testing/recordingSender';

// What the catalog backend enforces on every entity it ingests (its default policies), then the kind's own rules.
const catalogPolicies = EntityPolicies.allOf([
  new DefaultNamespaceEntityPolicy(),
  new NoForeignRootFieldsEntityPolicy(),
  new FieldFormatEntityPolicy(),
  new SchemaValidEntityPolicy(),
]);

async function acceptedByTheCatalog(entity: Entity): Promise<void> {
  const enforced = await catalogPolicies.enforce(entity);
  if (!enforced) throw new Error('the catalog policies dropped the entity');
  const validators = { Resource: resourceEntityV1alpha1Validator, Component: componentEntityV1alpha1Validator };
  const validator = validators[enforced.kind as keyof typeof validators];
  if (!validator || !(await validator.check(enforced))) throw new Error(`no ${enforced.kind} validator accepts it`);
}

const PG_DATABASE = 'resource:default/payments-db';

function setup() {
  const sender = new RecordingSender();
  const catalog = new RecordingCatalog([...exampleDatabases(), component()]);
  const action = createRequestAccessAction({ sender, statusUrlOf: id => `https://jitgate.example.com/api/access-requests/${id}`, catalog });
  const run = (input: Record<string, unknown>) =>
    action.handler(createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE }));
  const databaseAsk = (overrides: Record<string, unknown> = {}) => ({
    ...askedFor({ entityRef: PG_DATABASE }),
    target: { role: 'payments_read' },
    ...overrides,
  });
  return { sender, catalog, run, databaseAsk };
}

function component(): Entity {
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Component',
    metadata: {
      name: 'payments-api',
      namespace: 'default',
      annotations: { [PROVIDER_ANNOTATION]: 'azure-rbac', [SCOPES_ANNOTATION]: `${PAYMENTS_RG}, ${PAYMENTS_RG}-staging`, [ROLES_ANNOTATION]: 'Reader' },
    },
    spec: { type: 'service', owner: 'group:default/payments', lifecycle: 'production' },
  };
}

describe('example database entities (examples/databases.yaml)', () => {
  const databases = exampleDatabases();

  it('are Resources of type database that the catalog accepts', async () => {
    expect(databases.length).toBeGreaterThanOrEqual(4);
    for (const entity of databases) {
      expect([entity.kind, entity.spec?.type]).toEqual(['Resource', 'database']);
      await expect(acceptedByTheCatalog(entity)).resolves.toBeUndefined();
    }
  });

  it('cover every database provider, each naming one target whose every role makes a valid request', () => {
    const providers = new Set<string>();
    for (const entity of databases) {
      const targets = accessTargetsOf(entity);
      if ('missing' in targets) throw new Error(`${stringifyEntityRef(entity)} lacks ${targets.missing.join(', ')}`);
      expect(targets.scopes).toHaveLength(1);
      providers.add(targets.provider);
      for (const role of targets.roles) {
        const request = buildAccessRequest({
          requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
          requester: requesterOf({ entity: userEntity() }),
          asked: askedFor({ target: { provider: targets.provider, scope: targets.scopes[0]!, role }, entityRef: targets.entityRef }),
        });
        expect([role, validateAccessRequest(request)]).toEqual([role, []]);
      }
    }
    expect([...providers].sort()).toEqual(['azure-sql', 'cosmos-data', 'postgres']);
  });

  it('would be refused with a link the catalog cannot resolve, as the README example once was', async () => {
    // Proves the check above can fail: a relative link is no URL to the catalog's schema (links need the
    // Backstage app's own address).
    const [entity] = databases;
    const relative = { ...entity!, metadata: { ...entity!.metadata, links: [{ url: '/create/templates/default/x' }] } };
    await expect(acceptedByTheCatalog(relative)).rejects.toThrow(/links/);
  });

  it("come with the README's example entities, which the catalog accepts too", async () => {
    const readme = readFileSync(join(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const blocks = [...readme.matchAll(/```yaml\n# catalog-info\.yaml\n([\s\S]*?)```/g)].map(m => parse(m[1]!) as Entity);
    expect(blocks.length).toBeGreaterThanOrEqual(1);
    for (const entity of blocks) await expect(acceptedByTheCatalog(entity)).resolves.toBeUndefined();
  });
});

describe('jitgate:access:request for a database from the catalog', () => {
  it("takes the provider and scope from the database's annotations, reading the catalog as the requester", async () => {
    const { sender, catalog, run, databaseAsk } = setup();
    await run(databaseAsk());
    const message = JSON.parse(sender.sent[0]!.body);
    expect(message.target).toEqual({ provider: 'postgres', scope: 'payments-primary/payments', role: 'payments_read' });
    expect(message.context.entityRef).toBe(PG_DATABASE);
    expect(catalog.asked).toHaveLength(1);
    expect(catalog.asked[0]!.entityRef).toBe(PG_DATABASE);
    expect(catalog.asked[0]!.credentials.principal).toMatchObject({ type: 'user' });
  });

  it('resolves a Cosmos DB container and an Azure SQL database the same way', async () => {
    const { sender, run, databaseAsk } = setup();
    await run(databaseAsk({ entityRef: 'resource:default/payments-ledger', target: { role: 'Cosmos DB Built-in Data Reader' } }));
    await run(databaseAsk({ entityRef: 'resource:default/payments-sql', target: { role: 'payments_write' } }));
    const [ledger, sql] = sender.sent.map(s => JSON.parse(s.body).target);
    expect(ledger.provider).toBe('cosmos-data');
    expect(ledger.scope).toMatch(/\/databaseAccounts\/cosmos-payments-prod\/dbs\/payments\/colls\/ledger$/);
    expect(sql).toMatchObject({ provider: 'azure-sql', role: 'payments_write' });
  });

  it('leaves a target the template gives whole alone, without reading the catalog', async () => {
    const { sender, catalog, run } = setup();
    await run({ ...askedFor(), entityRef: PG_DATABASE });
    expect(JSON.parse(sender.sent[0]!.body).target.provider).toBe('azure-rbac');
    expect(catalog.asked).toEqual([]);
  });

  it.each([
    ['a role the database does not offer', { target: { role: 'payments_admin' } },
      "target.role: 'payments_admin' is not a role resource:default/payments-db offers (payments_read, payments_write)"],
    ['a role in another case', { target: { role: 'PAYMENTS_READ' } }, "target.role: 'PAYMENTS_READ' is not a role"],
    ['an entity not in the catalog', { entityRef: 'resource:default/nope' },
      'entityRef: resource:default/nope is not in the catalog, or you may not see it'],
    ['an entity with several scopes', { entityRef: 'component:default/payments-api', target: { role: 'Reader' } },
      'entityRef: component:default/payments-api offers 2 scopes; name the one you need in target.scope'],
    ['no entity', { entityRef: undefined }, 'entityRef: names no entity'],
    ['a provider without a scope', { target: { provider: 'postgres', role: 'payments_read' } }, 'target.scope: must be a string'],
  ])('refuses %s before sending anything', async (_, overrides, message) => {
    const { sender, run, databaseAsk } = setup();
    const failure = run(databaseAsk(overrides));
    await expect(failure).rejects.toThrow(InvalidAccessRequest);
    await expect(failure).rejects.toThrow(message);
    expect(sender.sent).toHaveLength(0);
  });

  it('refuses to resolve when it was set up without the catalog', async () => {
    const sender = new RecordingSender();
    const action = createRequestAccessAction({ sender, statusUrlOf: id => id });
    const input = { ...askedFor({ entityRef: PG_DATABASE }), target: { role: 'payments_read' } };
    await expect(
      action.handler(createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE })),
    ).rejects.toThrow('this action was set up without the catalog');
    expect(sender.sent).toHaveLength(0);
  });
});
