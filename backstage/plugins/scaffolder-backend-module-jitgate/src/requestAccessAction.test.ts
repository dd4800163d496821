import type { UserEntity } from '@backstage/catalog-model';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import type { AccessAsked } from './accessRequest';
import { DeliveryFailed, InvalidAccessRequest, UnknownRequester } from './errors';
import { createRequestAccessAction } from './requestAccessAction';
import { askedFor, JANE_OBJECT_ID, PAYMENTS_RG, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';
import { RecordingSender } from './testing/recordingSender';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const STATUS_BASE = 'https://jitgate.example.com';

function setup() {
  const sender = new RecordingSender();
  const action = createRequestAccessAction({
    sender,
    statusUrlOf: id => `${STATUS_BASE}/api/access-requests/${id}`,
  });
  const contextFor = (asked: AccessAsked, user: { entity?: UserEntity; ref?: string } | null = { entity: userEntity() }) =>
    createMockActionContext({
      input: asked as any,
      workspacePath: UNUSED_WORKSPACE,
      ...(user && { user }),
      task: { id: '9f0c6a2e-1d3b-4b8a-9c4e-5f6a7b8c9d0e' },
    });
  return { sender, action, contextFor };
}

function outputsOf(ctx: ReturnType<typeof createMockActionContext>): Record<string, unknown> {
  return Object.fromEntries((ctx.output as jest.Mock).mock.calls);
}

describe('jitgate:access:request', () => {
  it('sends exactly one message, under messageId = requestId, and outputs the id and status link', async () => {
    // GIVEN a signed-in user with an Entra object id, asking for Contributor for two hours
    const { sender, action, contextFor } = setup();
    const ctx = contextFor(askedFor());

    // WHEN the step runs
    await action.handler(ctx);

    // THEN one message left, keyed by its requestId, and the outputs point at it
    expect(sender.sent).toHaveLength(1);
    const [sent] = sender.sent;
    const message = JSON.parse(sent!.body);
    expect(sent!.messageId).toBe(message.requestId);
    expect(message.requestId).toMatch(UUID_V4);
    expect(message).toEqual({
      schemaVersion: 1,
      requestId: message.requestId,
      requester: {
        principalId: JANE_OBJECT_ID,
        principalType: 'User',
        displayName: 'Jane Doe',
        email: 'jane@example.com',
        backstageRef: 'user:default/jane',
      },
      target: { provider: 'azure-rbac', scope: PAYMENTS_RG, role: 'Contributor' },
      duration: 'PT2H',
      justification: 'Rotate the payments DB firewall rule for INC-4711',
      ticket: 'INC-4711',
      context: { entityRef: 'component:default/payments-api', taskId: '9f0c6a2e-1d3b-4b8a-9c4e-5f6a7b8c9d0e' },
    });
    expect(outputsOf(ctx)).toEqual({
      requestId: message.requestId,
      statusUrl: `${STATUS_BASE}/api/access-requests/${message.requestId}`,
    });
  });

  it('asks under a fresh requestId every time the template is run', async () => {
    const { sender, action, contextFor } = setup();
    await action.handler(contextFor(askedFor()));
    await action.handler(contextFor(askedFor()));
    const [first, second] = sender.sent.map(s => s.messageId);
    expect(first).not.toEqual(second);
  });

  it('keeps the requestId when a resumed task runs the step again, so jitgate sees the same request', async () => {
    // GIVEN checkpoints that survive, as the scaffolder keeps them across a backend restart
    const { sender, action, contextFor } = setup();
    const checkpoints = new Map<string, unknown>();
    const withCheckpoints = (asked: AccessAsked) => ({
      ...contextFor(asked),
      async checkpoint<T>({ key, fn }: { key: string; fn: () => Promise<T> | T }): Promise<T> {
        if (!checkpoints.has(key)) checkpoints.set(key, await fn());
        return checkpoints.get(key) as T;
      },
    });

    // WHEN the same step runs twice, then a step asking for something else runs
    await action.handler(withCheckpoints(askedFor()));
    await action.handler(withCheckpoints(askedFor()));
    await action.handler(withCheckpoints(askedFor({ duration: 'PT30M' })));

    // THEN the rerun reused the id (same body, so jitgate grants once); the other ask did not
    const [first, rerun, other] = sender.sent;
    expect(rerun!.messageId).toBe(first!.messageId);
    expect(rerun!.body).toBe(first!.body);
    expect(other!.messageId).not.toBe(first!.messageId);
  });

  it('leaves out a ticket and an entity ref the form left empty', async () => {
    const { sender, action, contextFor } = setup();
    await action.handler(contextFor(askedFor({ ticket: '', entityRef: '  ' })));
    const message = JSON.parse(sender.sent[0]!.body);
    expect(message).not.toHaveProperty('ticket');
    expect(message.context).toEqual({ taskId: '9f0c6a2e-1d3b-4b8a-9c4e-5f6a7b8c9d0e' });
  });

  it('falls back to the entity title or name when the profile has no display name', async () => {
    const { sender, action, contextFor } = setup();
    const annotations = { 'graph.microsoft.com/user-id': JANE_OBJECT_ID };
    await action.handler(contextFor(askedFor(), { entity: userEntity('sam', { annotations, profile: {}, title: 'Sam Poe' }) }));
    await action.handler(contextFor(askedFor(), { entity: userEntity('kim', { annotations, profile: {} }) }));
    const [sam, kim] = sender.sent.map(s => JSON.parse(s.body).requester);
    expect(sam).toEqual({ principalId: JANE_OBJECT_ID, principalType: 'User', displayName: 'Sam Poe', backstageRef: 'user:default/sam' });
    expect(kim.displayName).toBe('kim');
  });

  it('refuses a user without the graph.microsoft.com/user-id annotation, naming the user and the annotation', async () => {
    const { sender, action, contextFor } = setup();
    const ctx = contextFor(askedFor(), { entity: userEntity('jane', { annotations: {} }) });

    const failure = action.handler(ctx);

    await expect(failure).rejects.toThrow(UnknownRequester);
    await expect(failure).rejects.toThrow(/user:default\/jane has no 'graph\.microsoft\.com\/user-id' annotation/);
    expect(sender.sent).toHaveLength(0);
    expect(ctx.output).not.toHaveBeenCalled();
  });

  it('refuses an annotation that is not an Entra object id', async () => {
    const { sender, action, contextFor } = setup();
    const ctx = contextFor(askedFor(), { entity: userEntity('jane', { annotations: { 'graph.microsoft.com/user-id': 'jane@example.com' } }) });
    await expect(action.handler(ctx)).rejects.toThrow(/is 'jane@example\.com', which is not an Entra object id/);
    expect(sender.sent).toHaveLength(0);
  });

  it('refuses the nil GUID as an Entra object id: it names nobody', async () => {
    const { sender, action, contextFor } = setup();
    const annotations = { 'graph.microsoft.com/user-id': '00000000-0000-0000-0000-000000000000' };
    const ctx = contextFor(askedFor(), { entity: userEntity('jane', { annotations }) });
    await expect(action.handler(ctx)).rejects.toThrow(
      "The 'graph.microsoft.com/user-id' annotation of user:default/jane is not an Entra object id: it must not be the " +
        'nil GUID 00000000-0000-0000-0000-000000000000: it names nobody.',
    );
    expect(sender.sent).toHaveLength(0);
  });

  it('refuses a task without a catalog user', async () => {
    const { sender, action, contextFor } = setup();
    await expect(action.handler(contextFor(askedFor(), { ref: 'user:default/ghost' }))).rejects.toThrow(
      /user:default\/ghost has no User entity in the catalog/,
    );
    await expect(action.handler(contextFor(askedFor(), null))).rejects.toThrow(/without a signed-in user/);
    expect(sender.sent).toHaveLength(0);
  });

  it.each([
    ['2 hours', "duration: '2 hours' is not an ISO 8601 duration such as PT2H or PT30M"],
    ['P1M', "duration: 'P1M' is not an ISO 8601 duration"],
    ['PT0S', 'duration: duration must be positive'],
    ['P32D', 'duration: duration must be at most P31D'],
    ['P4WT72H1S', 'duration: duration must be at most P31D'],
  ])('refuses the duration %j and sends nothing', async (duration, expected) => {
    const { sender, action, contextFor } = setup();
    const ctx = contextFor(askedFor({ duration }));
    const failure = action.handler(ctx);
    await expect(failure).rejects.toThrow(InvalidAccessRequest);
    await expect(failure).rejects.toThrow(expected);
    expect(sender.sent).toHaveLength(0);
    expect(ctx.output).not.toHaveBeenCalled();
  });

  it('refuses a justification over 1000 characters and sends nothing', async () => {
    const { sender, action, contextFor } = setup();
    const failure = action.handler(contextFor(askedFor({ justification: 'x'.repeat(1001) })));
    await expect(failure).rejects.toThrow('justification: must be at most 1000 characters (it is 1001)');
    expect(sender.sent).toHaveLength(0);
  });

  it('counts characters as jitgate does: 1000 emoji are 1000 characters, not 2000', async () => {
    const { sender, action, contextFor } = setup();
    await action.handler(contextFor(askedFor({ justification: '🔥'.repeat(1000) })));
    expect(sender.sent).toHaveLength(1);
  });

  it('reports every problem at once, with the field each one is about', async () => {
    const { sender, action, contextFor } = setup();
    const asked = askedFor({
      target: { provider: 'azure-rbac', scope: '/subscriptions/*', role: 'Owner\u202e' },
      justification: '   ',
      ticket: 'T'.repeat(65),
      entityRef: 'payments-api',
    });
    const error = await action.handler(contextFor(asked)).catch(e => e);
    expect(error).toBeInstanceOf(InvalidAccessRequest);
    expect((error as InvalidAccessRequest).fieldErrors.map(e => e.loc)).toEqual([
      'target.scope',
      'target.role',
      'justification',
      'ticket',
      'context.entityRef',
    ]);
    expect(sender.sent).toHaveLength(0);
  });

  it('on a dry run sends nothing and outputs the message it would have sent', async () => {
    // GIVEN a dry run from the template editor
    const { sender, action, contextFor } = setup();
    const ctx = { ...contextFor(askedFor()), isDryRun: true };

    // WHEN the step runs
    await action.handler(ctx);

    // THEN nothing left, and the outputs show the request in full
    expect(sender.sent).toHaveLength(0);
    const outputs = outputsOf(ctx);
    const message = outputs.message as Record<string, any>;
    expect(message.requestId).toMatch(UUID_V4);
    expect(outputs.requestId).toBe(message.requestId);
    expect(outputs.statusUrl).toBe(`${STATUS_BASE}/api/access-requests/${message.requestId}`);
    expect(message.requester.principalId).toBe(JANE_OBJECT_ID);
    expect(message.target).toEqual(askedFor().target);
  });

  it('still checks everything on a dry run', async () => {
    const { sender, action, contextFor } = setup();
    const ctx = { ...contextFor(askedFor({ duration: 'P40D' })), isDryRun: true };
    await expect(action.handler(ctx)).rejects.toThrow('duration must be at most P31D');
    expect(sender.sent).toHaveLength(0);
    expect(ctx.output).not.toHaveBeenCalled();
  });

  it('fails the step, with no outputs, when the request cannot be delivered', async () => {
    const { sender, action, contextFor } = setup();
    sender.failWith = new DeliveryFailed('jitgate is unavailable', { transient: true });
    const ctx = contextFor(askedFor());
    await expect(action.handler(ctx)).rejects.toThrow('jitgate is unavailable');
    expect(ctx.output).not.toHaveBeenCalled();
  });
});
