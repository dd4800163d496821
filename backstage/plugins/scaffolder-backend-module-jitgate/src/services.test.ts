import {
  DefaultNamespaceEntityPolicy,
  EntityPolicies,
  FieldFormatEntityPolicy,
  NoForeignRootFieldsEntityPolicy,
  SchemaValidEntityPolicy,
  componentEntityV1alpha1Validator,
  stringifyEntityRef,
  type Entity,
} from '@backstage/catalog-model';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { buildAccessRequest, validateAccessRequest } from './accessRequest';
import { InvalidAccessRequest } from './errors';
import { createRequestAccessAction, REQUEST_ACCESS_ACTION_ID } from './requestAccessAction';
import { requesterOf } from './requester';
import { accessTargetsOf, PROVIDER_ANNOTATION, ROLES_ANNOTATION, SCOPES_ANNOTATION, TARGETS_PATH } from './targets';
import { RecordingCatalog } from './testing/catalog';
import { askedFor, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';
import { RecordingSender } from './testing/recordingSender';
import { loadTemplate, renderWith } from './testing/template';

/** The example services behind Envoy the module ships (examples/services.yaml). */
function exampleServices(): Entity[] {
  const text = readFileSync(join(__dirname, '..', 'examples', 'services.yaml'), 'utf8');
  return parseAllDocuments(text).map(doc => doc.toJS() as Entity);
}

const catalogPolicies = EntityPolicies.allOf([
  new DefaultNamespaceEntityPolicy(),
  new NoForeignRootFieldsEntityPolicy(),
  new FieldFormatEntityPolicy(),
  new SchemaValidEntityPolicy(),
]);

const INVOICES = 'component:default/invoices-api';

function setup() {
  const sender = new RecordingSender();
  const catalog = new RecordingCatalog(exampleServices());
  const action = createRequestAccessAction({ sender, statusUrlOf: id => id, catalog });
  const run = (input: Record<string, unknown>) =>
    action.handler(createMockActionContext<any, any>({ input, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE }));
  return { sender, catalog, run };
}

describe('example services behind Envoy (examples/services.yaml)', () => {
  const services = exampleServices();

  it('are Components the catalog accepts, each naming one envoy target whose every role makes a valid request', async () => {
    expect(services.length).toBeGreaterThanOrEqual(1);
    for (const entity of services) {
      const enforced = await catalogPolicies.enforce(entity);
      expect(enforced && (await componentEntityV1alpha1Validator.check(enforced))).toBe(true);
      const targets = accessTargetsOf(entity);
      if ('missing' in targets) throw new Error(`${stringifyEntityRef(entity)} lacks ${targets.missing.join(', ')}`);
      expect([targets.provider, targets.scopes.length]).toEqual(['envoy', 1]);
      for (const role of targets.roles) {
        const request = buildAccessRequest({
          requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
          requester: requesterOf({ entity: userEntity() }),
          asked: askedFor({ target: { provider: 'envoy', scope: targets.scopes[0]!, role }, entityRef: targets.entityRef }),
        });
        expect([role, validateAccessRequest(request)]).toEqual([role, []]);
      }
    }
  });
});

describe('jitgate:access:request for a service behind Envoy', () => {
  it("takes provider envoy and the service from the component's annotations", async () => {
    const { sender, catalog, run } = setup();
    await run({ ...askedFor({ entityRef: INVOICES }), target: { role: 'write' }, ticket: 'CHG-12' });
    const message = JSON.parse(sender.sent[0]!.body);
    expect(message.target).toEqual({ provider: 'envoy', scope: 'invoices-api', role: 'write' });
    expect(message.context.entityRef).toBe(INVOICES);
    expect(catalog.asked[0]!.credentials.principal).toMatchObject({ type: 'user' });
  });

  it('refuses a role the service does not offer, and sends nothing', async () => {
    const { sender, run } = setup();
    await expect(run({ ...askedFor({ entityRef: INVOICES }), target: { role: 'Contributor' } })).rejects.toThrow(InvalidAccessRequest);
    expect(sender.sent).toEqual([]);
  });
});

describe('templates/request-service-access/template.yaml', () => {
  const service = loadTemplate('request-service-access');
  const filled = renderWith({
    'parameters.service': INVOICES,
    'parameters.role': 'read',
    'parameters.duration': 'PT4H',
    'parameters.justification': 'Reconcile the invoices for INC-4711',
    'parameters.ticket': 'INC-4711',
  });

  it("is the template jitgate's refusals link to, and sends the service's own target", async () => {
    // NB. shared/envoy_authz.py TEMPLATE: a call Envoy refuses links to this name, with `service` filled in.
    expect(service.template.metadata.name).toBe('jitgate-request-service-access');
    expect(service.field('service')).toBeDefined();
    const request = service.step('request');
    expect(request.action).toBe(REQUEST_ACCESS_ACTION_ID);
    const input = filled(request.input) as any;
    expect(input.target).toEqual({ role: 'read' });
    const { sender, run } = setup();
    await run(input);
    expect(JSON.parse(sender.sent[0]!.body)).toMatchObject({
      target: { provider: 'envoy', scope: 'invoices-api', role: 'read' },
      duration: 'PT4H',
    });
    expect(service.template.spec.steps).toHaveLength(1);
  });

  it('offers only components behind Envoy, and their roles from the targets route', () => {
    const [filter] = service.field('service')['ui:options'].catalogFilter;
    expect(filter).toEqual({
      kind: 'Component',
      [`metadata.annotations.${PROVIDER_ANNOTATION}`]: 'envoy',
      [`metadata.annotations.${SCOPES_ANNOTATION}`]: { exists: true },
      [`metadata.annotations.${ROLES_ANNOTATION}`]: { exists: true },
    });
    for (const entity of exampleServices()) {
      expect(entity.kind).toBe(filter.kind);
      expect(entity.metadata.annotations?.[PROVIDER_ANNOTATION]).toBe('envoy');
    }
    expect(service.field('role')['ui:options']).toMatchObject({
      path: `scaffolder${TARGETS_PATH}`,
      params: { entityRef: '{{ parameters.service }}' },
      arraySelector: 'roles',
    });
    expect(service.pageOf('service')).toBeLessThan(service.pageOf('role'));
  });

  it('offers durations jitgate accepts', () => {
    const duration = service.field('duration');
    expect(duration.enum).toContain(duration.default);
    for (const preset of duration.enum) {
      const request = buildAccessRequest({
        requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
        requester: requesterOf({ entity: userEntity() }),
        asked: askedFor({ target: { provider: 'envoy', scope: 'invoices-api', role: 'read' }, duration: preset }),
      });
      expect(validateAccessRequest(request)).toEqual([]);
    }
  });
});
