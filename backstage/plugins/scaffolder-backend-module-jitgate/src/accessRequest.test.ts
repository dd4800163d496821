import { buildAccessRequest, validateAccessRequest, type AccessAsked } from './accessRequest';
import { durationMicroseconds } from './durations';
import { requesterOf } from './requester';
import { askedFor, userEntity } from './testing/fixtures';

const SUB = '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649';

function problemsOf(asked: AccessAsked) {
  const request = buildAccessRequest({
    requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
    requester: requesterOf({ entity: userEntity() }),
    asked,
  });
  return validateAccessRequest(request);
}

const target = (provider: string, scope: string, role: string) => askedFor({ target: { provider, scope, role } });

describe('durationMicroseconds', () => {
  it.each([
    ['PT30M', 30 * 60e6],
    ['PT2H', 2 * 3600e6],
    ['P1DT4H', 28 * 3600e6],
    ['P1W', 7 * 86_400e6],
    ['PT0.5S', 500_000],
    ['PT0.000001S', 1],
    ['P31D', 31 * 86_400e6],
  ])('reads %s', (text, micros) => {
    expect(durationMicroseconds(text)).toBe(micros);
  });

  it.each(['', 'P', 'PT', 'P1DT', 'P1Y', 'P1M', 'PT2h', ' PT2H', 'PT2H\n', '-PT2H', 'PT0.0000001S', 'P٣D'])('refuses %j', text => {
    expect(durationMicroseconds(text)).toBeUndefined();
  });
});

describe('validateAccessRequest', () => {
  it('accepts the architecture example', () => {
    expect(problemsOf(askedFor())).toEqual([]);
  });

  it.each([
    ['azure-rbac', SUB],
    ['azure-rbac', `${SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.Sql/servers/payments-db`],
    ['azure-pim', '/providers/Microsoft.Management/managementGroups/mg-platform'],
    ['local', `${SUB}/resourceGroups/rg-local`],
    ['gcp-iam', 'projects/payments-prod-42'],
    ['gcp-iam', 'folders/1234567890'],
  ])('accepts the %s scope %s', (provider, scope) => {
    const role = provider === 'gcp-iam' ? 'roles/viewer' : 'Contributor';
    expect(problemsOf(target(provider, scope, role))).toEqual([]);
  });

  it.each([
    ['azure-rbac', '/subscriptions/*', "scope segment '*' is not allowed"],
    ['azure-rbac', `${SUB}/`, "scope must start with '/' and must not end with '/'"],
    ['azure-rbac', `${SUB}/resourceGroups/../x`, "scope segment '..' is not allowed"],
    ['azure-rbac', '/subscriptions/payments', 'scope must be /subscriptions/<subscription guid>'],
    ['azure-rbac', `${SUB}/vaults/x`, 'below a subscription the scope must be /resourceGroups/<name>'],
    ['azure-rbac', `${SUB}/resourceGroups/rg/providers/Microsoft.Sql/servers`, 'a resource scope must be /providers/<namespace>/<type>/<name>'],
    ['azure-rbac', '/providers/Microsoft.Management/managementGroups', 'a management group scope is'],
    ['azure-rbac', '/tenants/x', 'scope must be a subscription, resource group, resource or management group path'],
    ['azure-rbac', `${SUB}/resourceGroups/rg-pаyments`, 'scope must be ASCII'],
    ['gcp-iam', 'projects/Payments', 'scope must be projects/<id>, folders/<number> or organizations/<number>'],
    ['azure-rbac', '', 'must not be empty'],
  ])('refuses the %s scope %j', (provider, scope, expected) => {
    const role = provider === 'gcp-iam' ? 'roles/viewer' : 'Reader';
    expect(problemsOf(target(provider, scope, role))).toEqual([{ loc: 'target.scope', msg: expect.stringContaining(expected) }]);
  });

  it.each([
    ['azure-rbac', 'Storage Blob Data Reader'],
    ['azure-rbac', 'B24988AC-6180-42A0-AB88-20F7382DD24C'],
    ['gcp-iam', 'roles/cloudsql.admin'],
    ['gcp-iam', 'projects/payments-prod-42/roles/dbOperator'],
  ])('accepts the %s role %j', (provider, role) => {
    const scope = provider === 'gcp-iam' ? 'projects/payments-prod-42' : SUB;
    expect(problemsOf(target(provider, scope, role))).toEqual([]);
  });

  it.each([
    ['azure-rbac', 'Contributor ', "role must be a role name such as 'Contributor' or a role definition GUID"],
    ['azure-rbac', 'Cоntributor', 'role must be ASCII'],
    ['gcp-iam', 'viewer', 'role must be roles/<name> or a custom role path'],
  ])('refuses the %s role %j', (provider, role, expected) => {
    const scope = provider === 'gcp-iam' ? 'projects/payments-prod-42' : SUB;
    expect(problemsOf(target(provider, scope, role))).toEqual([{ loc: 'target.role', msg: expect.stringContaining(expected) }]);
  });

  const AZURE_PG = `${SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg-payments`;

  it.each([
    ['payments-primary/payments', 'payments_read'],
    [`${AZURE_PG}/databases/payments`, 'payments_read'],
    ['projects/acme-payments/instances/pg-main/databases/payments', 'payments_read'],
    ['payments-primary/payments', "x'; DROP ROLE jitgate; --"],
    ['payments-primary/payments', 'Pay "Read"'],
  ])('accepts the postgres database %s and role %j', (scope, role) => {
    expect(problemsOf(target('postgres', scope, role))).toEqual([]);
  });

  it.each([
    ['payments-primary/payments;DROP DATABASE payments', 'payments_read', 'target.scope', 'a PostgreSQL scope must be <server>/<database>'],
    [AZURE_PG, 'payments_read', 'target.scope', "a PostgreSQL scope starting with '/' must be"],
    ['projects/acme-payments/instances/pg-main', 'payments_read', 'target.scope', 'a Cloud SQL scope must be'],
    ['payments-primary/payments', 'payments\u0000read', 'target.role', 'printable ASCII'],
    ['payments-primary/payments', 'pаyments_read', 'target.role', 'role must be ASCII'],
    ['payments-primary/payments', 'r'.repeat(64), 'target.role', 'at most 63 bytes'],
    ['payments-primary/payments', 'payments_read ', 'target.role', 'must not start or end with a space'],
  ])('refuses the postgres database %j with role %j', (scope, role, loc, expected) => {
    expect(problemsOf(target('postgres', scope, role))).toEqual([{ loc, msg: expect.stringContaining(expected) }]);
  });

  const SQL = `${SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.Sql/servers/sql-payments`;
  const COSMOS = `${SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-payments`;

  it.each([
    [`${SQL}/databases/payments`, 'payments_read'],
    [`${SQL}/databases/payments`, 'db_datareader'],
    [`${SQL}/databases/payments`, 'pay]ments; DROP USER [x]; --'],
    [`${SQL}/databases/payments`, 'r'.repeat(128)],
  ])('accepts the azure-sql database %s and role %j', (scope, role) => {
    expect(problemsOf(target('azure-sql', scope, role))).toEqual([]);
  });

  it.each([
    [SQL, 'payments_read', 'target.scope', 'an Azure SQL scope must be'],
    [`${SQL}/databases/pay;ments`, 'payments_read', 'target.scope', "scope segment 'pay;ments' is not allowed"],
    ['sql-payments/payments', 'payments_read', 'target.scope', "scope must start with '/'"],
    [`${SQL}/databases/payments`, 'r'.repeat(129), 'target.role', 'at most 128 characters'],
    [`${SQL}/databases/payments`, 'payments\tread', 'target.role', 'printable ASCII'],
    [`${SQL}/databases/payments`, ' payments_read', 'target.role', 'must not start or end with a space'],
  ])('refuses the azure-sql database %j with role %j', (scope, role, loc, expected) => {
    expect(problemsOf(target('azure-sql', scope, role))).toEqual([{ loc, msg: expect.stringContaining(expected) }]);
  });

  it.each([
    [COSMOS, 'Cosmos DB Built-in Data Reader'],
    [`${COSMOS}/dbs/payments`, '00000000-0000-0000-0000-000000000001'],
    [`${COSMOS}/dbs/payments/colls/ledger`, 'Cosmos DB Built-in Data Contributor'],
  ])('accepts the cosmos-data scope %s and role %j', (scope, role) => {
    expect(problemsOf(target('cosmos-data', scope, role))).toEqual([]);
  });

  it.each([
    [`${COSMOS}/colls/ledger`, 'Cosmos DB Built-in Data Reader', 'target.scope', 'a Cosmos DB scope must be'],
    [`${COSMOS}/dbs/payments/colls/ledger/docs/x`, 'Cosmos DB Built-in Data Reader', 'target.scope', 'a Cosmos DB scope must be'],
    ['/dbs/payments', 'Cosmos DB Built-in Data Reader', 'target.scope', 'scope must be a subscription'],
    [COSMOS, "Cosmos DB Built-in Data Reader'; --", 'target.role', 'role must be a role name such as'],
  ])('refuses the cosmos-data scope %j with role %j', (scope, role, loc, expected) => {
    expect(problemsOf(target('cosmos-data', scope, role))).toEqual([{ loc, msg: expect.stringContaining(expected) }]);
  });

  it('refuses an unknown provider without judging its scope or role', () => {
    expect(problemsOf(target('aws-iam', 'arn:aws:iam::123', 'Admin'))).toEqual([
      { loc: 'target.provider', msg: 'must be one of azure-rbac, azure-pim, gcp-iam, local, postgres, azure-sql, cosmos-data' },
    ]);
  });

  it.each([
    ['00000000-0000-0000-0000-000000000000', 'must not be the nil GUID 00000000-0000-0000-0000-000000000000: it names nobody'],
    ['jane', 'must be an Entra object id (a GUID)'],
  ])('refuses the principal id %j with the words of jitgate\'s model', (principalId, msg) => {
    const request = buildAccessRequest({
      requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
      requester: { ...requesterOf({ entity: userEntity() }), principalId },
      asked: askedFor(),
    });
    expect(validateAccessRequest(request)).toEqual([{ loc: 'requester.principalId', msg }]);
  });

  it('refuses values of the wrong type, as a template may render them', () => {
    const asked = { ...askedFor(), duration: 2 as unknown as string, ticket: 4711 as unknown as string };
    expect(problemsOf(asked)).toEqual([
      { loc: 'duration', msg: 'duration must be an ISO 8601 string such as PT2H' },
      { loc: 'ticket', msg: 'must be a string' },
    ]);
  });

  it('refuses control and bidirectional characters in the justification, but not new lines', () => {
    expect(problemsOf(askedFor({ justification: 'line one\nline two\tdone' }))).toEqual([]);
    expect(problemsOf(askedFor({ justification: 'approve me\u202e' }))).toEqual([
      { loc: 'justification', msg: 'must not contain control or bidirectional formatting characters' },
    ]);
  });

  it('holds the ticket to 64 characters of the ticket alphabet', () => {
    expect(problemsOf(askedFor({ ticket: 'CHG-1/2#3_4.5' }))).toEqual([]);
    expect(problemsOf(askedFor({ ticket: 'T'.repeat(65) }))).toEqual([{ loc: 'ticket', msg: 'must be at most 64 characters (it is 65)' }]);
    expect(problemsOf(askedFor({ ticket: '#4711' }))).toEqual([{ loc: 'ticket', msg: 'must be a ticket id such as INC-4711' }]);
  });
});
