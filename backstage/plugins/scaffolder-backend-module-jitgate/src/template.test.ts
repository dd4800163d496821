import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { validateAccessRequest, buildAccessRequest } from './accessRequest';
import { createRequestAccessAction, REQUEST_ACCESS_ACTION_ID } from './requestAccessAction';
import { requesterOf } from './requester';
import { PROVIDER_ANNOTATION, ROLES_ANNOTATION, SCOPES_ANNOTATION, TARGETS_PATH } from './targets';
import { RecordingCatalog, exampleDatabases } from './testing/catalog';
import { askedFor, PAYMENTS_RG, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';
import { RecordingSender } from './testing/recordingSender';
import { loadTemplate, renderWith } from './testing/template';

const { template, field, pageOf, step } = loadTemplate('request-access');

/** What the scaffolder would have once the form is filled and catalog:fetch has run. */
const render = renderWith({
  'parameters.component': 'component:default/payments-api',
  'parameters.scope': PAYMENTS_RG,
  'parameters.role': 'Contributor',
  'parameters.duration': 'PT2H',
  'parameters.justification': 'Rotate the payments DB firewall rule for INC-4711',
  'parameters.ticket': 'INC-4711',
  "steps.component.output.entity.metadata.annotations['jitgate.io/provider']": 'azure-rbac',
});

describe('templates/request-access/template.yaml', () => {
  it('is a v1beta3 template whose request step the action accepts and sends', async () => {
    expect(template.apiVersion).toBe('scaffolder.backstage.io/v1beta3');
    expect(template.kind).toBe('Template');

    // GIVEN the request step's input, rendered from a filled form
    const request = step('request');
    expect(request.action).toBe(REQUEST_ACCESS_ACTION_ID);
    const input = render(request.input) as any;

    // WHEN the action runs it
    const sender = new RecordingSender();
    const action = createRequestAccessAction({ sender, statusUrlOf: id => `https://jitgate.example.com/api/access-requests/${id}` });
    await action.handler(createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE }));

    // THEN one request leaves with what the form said
    expect(sender.sent).toHaveLength(1);
    expect(JSON.parse(sender.sent[0]!.body)).toMatchObject({
      target: { provider: 'azure-rbac', scope: PAYMENTS_RG, role: 'Contributor' },
      duration: 'PT2H',
      ticket: 'INC-4711',
      context: { entityRef: 'component:default/payments-api' },
    });
    // and the input has only what the action's schema declares
    const declared = Object.keys((action.schema?.input as { properties: object }).properties);
    expect(Object.keys(input).filter(key => !declared.includes(key))).toEqual([]);
  });

  it('reads the provider with catalog:fetch from the chosen component', () => {
    expect(step('component')).toMatchObject({ action: 'catalog:fetch', input: { entityRef: '${{ parameters.component }}' } });
    expect(step('request').input.target.provider).toContain(`annotations['${PROVIDER_ANNOTATION}']`);
  });

  it('offers only components that carry the jitgate annotations', () => {
    const [filter] = field('component')['ui:options'].catalogFilter;
    expect(filter).toEqual({
      kind: 'Component',
      [`metadata.annotations.${PROVIDER_ANNOTATION}`]: { exists: true },
      [`metadata.annotations.${SCOPES_ANNOTATION}`]: { exists: true },
      [`metadata.annotations.${ROLES_ANNOTATION}`]: { exists: true },
    });
  });

  it.each([
    ['scope', 'scopes'],
    ['role', 'roles'],
  ])("feeds the %s picker from the module's targets route", (name, list) => {
    const picker = field(name);
    expect(picker['ui:field']).toBe('SelectFieldFromApi');
    expect(picker['ui:options']).toMatchObject({
      path: `scaffolder${TARGETS_PATH}`,
      params: { entityRef: '{{ parameters.component }}' },
      arraySelector: list,
    });
    // The picker fetches once, when its page opens: the component must be on an earlier page.
    expect(pageOf('component')).toBeLessThan(pageOf(name));
  });

  it('offers duration presets that jitgate accepts', () => {
    const duration = field('duration');
    expect(duration.enum).toEqual(['PT30M', 'PT1H', 'PT2H', 'PT4H']);
    expect(duration.enum).toContain(duration.default);
    for (const preset of duration.enum) {
      const request = buildAccessRequest({
        requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
        requester: requesterOf({ entity: userEntity() }),
        asked: askedFor({ duration: preset }),
      });
      expect(validateAccessRequest(request)).toEqual([]);
    }
  });

  it("holds justification and ticket to the action's limits in the form already", () => {
    const ticket = field('ticket');
    const formAccepts = (value: string) => value.length <= ticket.maxLength && new RegExp(ticket.pattern).test(value);
    for (const value of ['INC-4711', 'CHG/2024#17_a.b', '#4711', 'INC 4711', 'T'.repeat(64), 'T'.repeat(65)]) {
      const request = buildAccessRequest({
        requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
        requester: requesterOf({ entity: userEntity() }),
        asked: askedFor({ ticket: value }),
      });
      expect([value, formAccepts(value)]).toEqual([value, validateAccessRequest(request).length === 0]);
    }
    expect(field('justification').maxLength).toBe(1000);
  });

  it("links to the request's status from the action's outputs", () => {
    const [status] = template.spec.output.links;
    expect(status.url).toBe('${{ steps.request.output.statusUrl }}');
  });
});

describe('templates/request-database-access/template.yaml', () => {
  const database = loadTemplate('request-database-access');
  const filled = renderWith({
    'parameters.database': 'resource:default/payments-sql',
    'parameters.role': 'payments_read',
    'parameters.duration': 'PT1H',
    'parameters.justification': 'Read the payments ledger for INC-4711',
    'parameters.ticket': 'INC-4711',
  });

  it("sends the database's own target, read by the action from the catalog", async () => {
    expect(database.template.apiVersion).toBe('scaffolder.backstage.io/v1beta3');
    // GIVEN the request step rendered from a filled form: a database and a role, no provider nor scope
    const request = database.step('request');
    expect(request.action).toBe(REQUEST_ACCESS_ACTION_ID);
    const input = filled(request.input) as any;
    expect(input.target).toEqual({ role: 'payments_read' });
    // WHEN the action runs it with the example databases in the catalog
    const sender = new RecordingSender();
    const catalog = new RecordingCatalog(exampleDatabases());
    const action = createRequestAccessAction({ sender, statusUrlOf: id => id, catalog });
    await action.handler(createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE }));
    // THEN the request names the database's provider and scope, and the template runs no other step
    expect(JSON.parse(sender.sent[0]!.body)).toMatchObject({
      target: {
        provider: 'azure-sql',
        scope: '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod/providers/Microsoft.Sql/servers/sql-payments/databases/payments',
        role: 'payments_read',
      },
      context: { entityRef: 'resource:default/payments-sql' },
    });
    expect(database.template.spec.steps).toHaveLength(1);
  });

  it('offers only databases that carry the jitgate annotations', () => {
    const [filter] = database.field('database')['ui:options'].catalogFilter;
    expect(filter).toEqual({
      kind: 'Resource',
      'spec.type': 'database',
      [`metadata.annotations.${PROVIDER_ANNOTATION}`]: { exists: true },
      [`metadata.annotations.${SCOPES_ANNOTATION}`]: { exists: true },
      [`metadata.annotations.${ROLES_ANNOTATION}`]: { exists: true },
    });
    for (const entity of exampleDatabases()) {
      expect([entity.kind, entity.spec?.type]).toEqual([filter.kind, filter['spec.type']]);
      for (const key of Object.keys(filter).filter(k => k.startsWith('metadata.annotations.'))) {
        expect(entity.metadata.annotations).toHaveProperty([key.slice('metadata.annotations.'.length)]);
      }
    }
  });

  it("feeds the role picker from the module's targets route, on a page after the database", () => {
    const picker = database.field('role');
    expect(picker['ui:field']).toBe('SelectFieldFromApi');
    expect(picker['ui:options']).toMatchObject({
      path: `scaffolder${TARGETS_PATH}`,
      params: { entityRef: '{{ parameters.database }}' },
      arraySelector: 'roles',
    });
    expect(database.pageOf('database')).toBeLessThan(database.pageOf('role'));
  });

  it('offers durations and limits that jitgate accepts', () => {
    const duration = database.field('duration');
    expect(duration.enum).toContain(duration.default);
    for (const preset of duration.enum) {
      const request = buildAccessRequest({
        requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
        requester: requesterOf({ entity: userEntity() }),
        asked: askedFor({ duration: preset }),
      });
      expect(validateAccessRequest(request)).toEqual([]);
    }
    expect(database.field('justification').maxLength).toBe(field('justification').maxLength);
    expect(database.field('ticket')).toEqual({ ...field('ticket'), description: database.field('ticket').description });
  });
});
