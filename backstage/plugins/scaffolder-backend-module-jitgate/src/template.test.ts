import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { parse } from 'yaml';
import { validateAccessRequest, buildAccessRequest } from './accessRequest';
import { createRequestAccessAction, REQUEST_ACCESS_ACTION_ID } from './requestAccessAction';
import { requesterOf } from './requester';
import { PROVIDER_ANNOTATION, ROLES_ANNOTATION, SCOPES_ANNOTATION, TARGETS_PATH } from './targets';
import { askedFor, PAYMENTS_RG, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';
import { RecordingSender } from './testing/recordingSender';

const TEMPLATE_PATH = join(__dirname, '..', '..', '..', 'templates', 'request-access', 'template.yaml');
const template = parse(readFileSync(TEMPLATE_PATH, 'utf8'));

const pages: { properties: Record<string, any> }[] = template.spec.parameters;
const field = (name: string) => pages.map(page => page.properties[name]).find(Boolean);
const step = (id: string) => template.spec.steps.find((s: { id: string }) => s.id === id);

/** What the scaffolder would have once the form is filled and catalog:fetch has run. */
const filled = {
  'parameters.component': 'component:default/payments-api',
  'parameters.scope': PAYMENTS_RG,
  'parameters.role': 'Contributor',
  'parameters.duration': 'PT2H',
  'parameters.justification': 'Rotate the payments DB firewall rule for INC-4711',
  'parameters.ticket': 'INC-4711',
  "steps.component.output.entity.metadata.annotations['jitgate.io/provider']": 'azure-rbac',
} as Record<string, string>;

// Renders `${{ expression }}` values from `filled`; an expression it does not know fails the
// test, so a template that starts reading something new is noticed here.
function render(value: unknown): unknown {
  if (typeof value === 'string') {
    const match = /^\$\{\{\s*(.+?)\s*\}\}$/.exec(value);
    if (!match) return value;
    const expression = match[1]!;
    if (!(expression in filled)) throw new Error(`template.yaml uses an expression this test does not know: ${expression}`);
    return filled[expression];
  }
  if (Array.isArray(value)) return value.map(render);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v)]));
  }
  return value;
}

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
    const pageOf = (fieldName: string) => pages.findIndex(page => fieldName in page.properties);
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
