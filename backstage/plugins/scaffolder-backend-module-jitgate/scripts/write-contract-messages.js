#!/usr/bin/env node
/*
 * Writes access request messages produced by the real action code, for the cross-language
 * contract test (tests/contract/test_backstage_messages.py):
 *
 *   node scripts/write-contract-messages.js <out.json> [count]
 *
 * `accepted`: <count> messages that jitgate:access:request sent (to a recording sender) or, on
 * a dry run, output; the Python model and the JSON Schema must accept every one.
 * `refused`: messages the action's rules refuse, with the field errors it reports; the Python
 * model must refuse every one too, on the same fields.
 *
 * It builds the module first, so it never reads a stale dist/.
 */
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
  cwd: root,
  stdio: 'inherit',
});

const { createRequestAccessAction } = require('../dist/requestAccessAction');
const { buildAccessRequest, validateAccessRequest } = require('../dist/accessRequest');
const { requesterOf } = require('../dist/requester');
const { RecordingSender } = require('../dist/testing/recordingSender');

const SUB = '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649';
const RG = `${SUB}/resourceGroups/rg-payments-prod`;

const TARGETS = [
  { provider: 'azure-rbac', scope: RG, role: 'Contributor' },
  { provider: 'azure-rbac', scope: SUB, role: 'Storage Blob Data Reader' },
  { provider: 'azure-rbac', scope: `${RG}/providers/Microsoft.Sql/servers/payments-db`, role: 'B24988AC-6180-42A0-AB88-20F7382DD24C' },
  { provider: 'azure-rbac', scope: `${RG}/providers/Microsoft.Sql/servers/payments-db/databases/ledger`, role: 'Reader' },
  { provider: 'azure-rbac', scope: `${SUB}/resourceGroups/rg.(legacy)_1`, role: `R${'e'.repeat(127)}` },
  { provider: 'azure-pim', scope: '/providers/Microsoft.Management/managementGroups/mg-platform', role: 'Owner' },
  { provider: 'local', scope: `${SUB}/resourceGroups/rg-local`, role: 'Contributor' },
  { provider: 'gcp-iam', scope: 'projects/payments-prod-42', role: 'roles/cloudsql.admin' },
  { provider: 'gcp-iam', scope: 'folders/1234567890', role: 'projects/payments-prod-42/roles/dbOperator' },
  { provider: 'gcp-iam', scope: 'organizations/987654321', role: 'organizations/987654321/roles/auditor.read' },
];
const DURATIONS = ['PT30M', 'PT1H', 'PT2H', 'PT4H', 'P1DT4H', 'P31D', 'PT0.5S', 'P1W', 'PT90M', 'PT2678400S', 'P4WT72H', 'PT0.000001S'];
const JUSTIFICATIONS = [
  'Rotate the payments DB firewall rule for INC-4711',
  'x'.repeat(1000),
  '🔥'.repeat(1000),
  'Line one\nline two\twith a tab',
  'Überprüfung der Zugriffsrechte für das Ledger — 請求',
  '  padded, but not blank  ',
];
const TICKETS = ['INC-4711', undefined, '', 'CHG/2024#17_a.b', 'T'.repeat(64), 'JIRA-1'];
const ENTITY_REFS = ['component:default/payments-api', undefined, 'resource:platform/pg-main', ''];

const OBJECT_ID = '2c5f39cb-3fb2-42e3-994f-1127d4ddb538';
function user(name, { objectId = OBJECT_ID, profile, title } = {}) {
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'User',
    metadata: { name, namespace: 'default', ...(title && { title }), annotations: { 'graph.microsoft.com/user-id': objectId } },
    spec: { profile: profile ?? {}, memberOf: [] },
  };
}
const USERS = [
  user('jane', { objectId: OBJECT_ID.toUpperCase(), profile: { displayName: 'Jane Doe', email: 'jane@example.com' } }),
  user('sam.poe', { title: 'Sam Poe' }),
  user('kim_lee', { profile: { email: 'kim.lee+jit@payments.example.co.uk' } }),
  user('renee', { profile: { displayName: `Renée ${'É'.repeat(250)}` } }),
];

function contextFor({ input, entity, isDryRun, outputs }) {
  const logger = { info() {}, warn() {}, error() {}, debug() {}, child: () => logger };
  return {
    input,
    user: { entity, ref: `user:default/${entity.metadata.name}` },
    task: { id: `task-${Math.random().toString(36).slice(2)}` },
    isDryRun,
    logger,
    workspacePath: os.tmpdir(),
    output: (name, value) => (outputs[name] = value),
    checkpoint: async ({ fn }) => fn(),
    createTemporaryDirectory: async () => fs.mkdtempSync(path.join(os.tmpdir(), 'jitgate-')),
    getInitiatorCredentials: async () => {
      throw new Error('not used by jitgate:access:request');
    },
  };
}

async function accepted(count) {
  const sender = new RecordingSender();
  const action = createRequestAccessAction({ sender, statusUrlOf: id => `https://jitgate.example.com/api/access-requests/${id}` });
  const messages = [];
  for (let i = 0; i < count; i += 1) {
    const pick = list => list[i % list.length];
    const input = {
      target: pick(TARGETS),
      duration: pick(DURATIONS),
      justification: pick(JUSTIFICATIONS),
      ...(pick(TICKETS) !== undefined && { ticket: pick(TICKETS) }),
      ...(pick(ENTITY_REFS) !== undefined && { entityRef: pick(ENTITY_REFS) }),
    };
    const outputs = {};
    const isDryRun = i % 5 === 4;
    const before = sender.sent.length;
    await action.handler(contextFor({ input, entity: pick(USERS), isDryRun, outputs }));
    const message = isDryRun ? outputs.message : JSON.parse(sender.sent[before].body);
    if (!isDryRun && sender.sent[before].messageId !== message.requestId) {
      throw new Error(`message ${i} was sent under messageId ${sender.sent[before].messageId}, not its requestId`);
    }
    if (outputs.requestId !== message.requestId) throw new Error(`message ${i}: output requestId differs from the message`);
    messages.push(message);
  }
  return messages;
}

const REFUSED_ASKS = [
  { duration: 'P32D' },
  { duration: 'PT0S' },
  { duration: 'P1M' },
  { duration: '2 hours' },
  { duration: 'P31DT0.000001S' },
  { duration: 'P1DT' },
  { justification: 'x'.repeat(1001) },
  { justification: '   ' },
  { justification: 'approve me\u202e' },
  { justification: 'nul\u0000byte' },
  { ticket: 'T'.repeat(65) },
  { ticket: '#4711' },
  { ticket: 'INC 4711' },
  { target: { provider: 'azure-rbac', scope: '/subscriptions/*', role: 'Reader' } },
  { target: { provider: 'azure-rbac', scope: `${SUB}/`, role: 'Reader' } },
  { target: { provider: 'azure-rbac', scope: `${SUB}/resourceGroups/../x`, role: 'Reader' } },
  { target: { provider: 'azure-rbac', scope: 'rg-payments-prod', role: 'Reader' } },
  { target: { provider: 'azure-rbac', scope: `${SUB}/resourceGroups/rg-pаyments`, role: 'Reader' } },
  { target: { provider: 'azure-rbac', scope: `${RG}/providers/Microsoft.Sql/servers`, role: 'Reader' } },
  { target: { provider: 'gcp-iam', scope: 'projects/Payments', role: 'roles/viewer' } },
  { target: { provider: 'azure-rbac', scope: RG, role: 'Contributor ' } },
  { target: { provider: 'azure-rbac', scope: RG, role: 'Cоntributor' } },
  { target: { provider: 'gcp-iam', scope: 'projects/payments-prod-42', role: 'viewer' } },
  { target: { provider: 'aws-iam', scope: 'arn:aws:iam::123', role: 'Admin' } },
  { entityRef: 'payments-api' },
  { requester: user('x', { profile: { displayName: 'X', email: 'not-an-email' } }) },
  { requester: user('y', { profile: { displayName: 'Y'.repeat(257) } }) },
  // The catalog never yields this one (requesterOf refuses the annotation): the message rules must refuse it too.
  { principalId: '00000000-0000-0000-0000-000000000000' },
];

function refused() {
  return REFUSED_ASKS.map(({ requester, principalId, ...overrides }, i) => {
    const asked = {
      target: TARGETS[0],
      duration: 'PT2H',
      justification: 'Rotate the payments DB firewall rule for INC-4711',
      ticket: 'INC-4711',
      entityRef: 'component:default/payments-api',
      ...overrides,
    };
    const message = buildAccessRequest({
      requestId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      requester: { ...requesterOf({ entity: requester ?? USERS[0] }), ...(principalId && { principalId }) },
      asked,
      taskId: 'contract-task',
    });
    const errors = validateAccessRequest(message);
    if (errors.length === 0) throw new Error(`refused case ${i} is accepted by the action's rules: ${JSON.stringify(overrides)}`);
    return { message, errors };
  });
}

async function main() {
  const [out, countArg = '60'] = process.argv.slice(2);
  const count = Number(countArg);
  if (!out || !Number.isInteger(count) || count < 1) {
    console.error('usage: node scripts/write-contract-messages.js <out.json> [count]');
    process.exit(2);
  }
  const doc = { accepted: await accepted(count), refused: refused() };
  fs.writeFileSync(out, JSON.stringify(doc, null, 2));
  console.log(`wrote ${doc.accepted.length} accepted and ${doc.refused.length} refused access requests to ${out}`);
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
