import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { buildAccessRequest, encodeAccessRequest, type AccessRequestV1 } from './accessRequest';
import { DeliveryFailed, InvalidAccessRequest, RequestIdConflict } from './errors';
import { HttpSender } from './httpSender';
import { createRequestAccessAction } from './requestAccessAction';
import { requesterOf } from './requester';
import { askedFor, UNUSED_WORKSPACE, userEntity } from './testing/fixtures';

interface Received {
  method?: string;
  url?: string;
  headers: IncomingMessage['headers'];
  body: string;
}

interface Answer {
  status: number;
  body?: unknown;
  delayMs?: number;
  location?: string;
}

/** A stand-in for jitgate's intake on 127.0.0.1 that answers what each test tells it to. */
class FakeIntake {
  readonly received: Received[] = [];
  answer: Answer = { status: 202 };
  /** When set, decides each answer in turn (overrides `answer`); status 0 drops the connection unanswered. */
  onRequest?: () => Answer;
  #server?: Server;

  async start(): Promise<string> {
    this.#server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', chunk => (body += chunk));
      req.on('end', () => {
        this.received.push({ method: req.method, url: req.url, headers: req.headers, body });
        const { status, body: answer, delayMs, location } = this.onRequest?.() ?? this.answer;
        if (status === 0) {
          req.socket.destroy();
          return;
        }
        setTimeout(() => {
          res.writeHead(status, { 'content-type': 'application/json', ...(location && { location }) });
          res.end(answer === undefined ? '' : typeof answer === 'string' ? answer : JSON.stringify(answer));
        }, delayMs ?? 0);
      });
    });
    await new Promise<void>(resolve => this.#server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise(resolve => this.#server?.close(resolve));
  }
}

function aRequest(): AccessRequestV1 {
  return buildAccessRequest({
    requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
    requester: requesterOf({ entity: userEntity() }),
    asked: askedFor(),
    taskId: 'task-1',
  });
}

describe('HttpSender', () => {
  const intake = new FakeIntake();
  let baseUrl: string;

  beforeAll(async () => {
    baseUrl = await intake.start();
  });
  afterAll(() => intake.stop());
  beforeEach(() => {
    intake.received.length = 0;
    intake.answer = { status: 202 };
  });

  it('POSTs the request as JSON to /api/access-requests and is done on 202', async () => {
    intake.answer = { status: 202, body: { requestId: aRequest().requestId, status: 'received', message: 'queued for evaluation' } };
    const request = aRequest();

    await new HttpSender({ baseUrl }).send(request);

    expect(intake.received).toHaveLength(1);
    const [call] = intake.received;
    expect(call!.method).toBe('POST');
    expect(call!.url).toBe('/api/access-requests');
    expect(call!.headers['content-type']).toBe('application/json');
    expect(call!.headers.authorization).toBeUndefined();
    expect(call!.headers['x-jitgate-dev-principal']).toBeUndefined();
    expect(call!.body).toBe(encodeAccessRequest(request));
  });

  it('calls a local jitgate as the configured development identity', async () => {
    await new HttpSender({ baseUrl, devPrincipal: '7d3b2a10-5c4e-4f6a-8b9c-0d1e2f3a4b5c' }).send(aRequest());
    expect(intake.received[0]!.headers['x-jitgate-dev-principal']).toBe('7d3b2a10-5c4e-4f6a-8b9c-0d1e2f3a4b5c');
    expect(intake.received[0]!.headers['x-jitgate-dev-roles']).toBe('Jit.Submitter');
  });

  it('carries a bearer token for the configured scope', async () => {
    const scopes: string[] = [];
    const credential = {
      async getToken(scope: string | string[]) {
        scopes.push(String(scope));
        return { token: 'token-for-jitgate', expiresOnTimestamp: Date.now() + 60_000 };
      },
    };
    await new HttpSender({ baseUrl, token: { credential, scope: 'api://jitgate/.default' } }).send(aRequest());
    expect(scopes).toEqual(['api://jitgate/.default']);
    expect(intake.received[0]!.headers.authorization).toBe('Bearer token-for-jitgate');
  });

  it('surfaces the field errors of a 422', async () => {
    intake.answer = {
      status: 422,
      body: {
        error: 'invalid',
        detail: "target.role: role Owner is not offered at this scope; duration: duration is longer than the rule's maximum PT4H",
        requestId: aRequest().requestId,
        errors: [
          { loc: 'target.role', msg: 'role Owner is not offered at this scope' },
          { loc: 'duration', msg: "duration is longer than the rule's maximum PT4H" },
        ],
      },
    };
    const error = await new HttpSender({ baseUrl }).send(aRequest()).catch(e => e);

    expect(error).toBeInstanceOf(InvalidAccessRequest);
    expect(error.refusedBy).toBe('jitgate');
    expect(error.fieldErrors).toEqual([
      { loc: 'target.role', msg: 'role Owner is not offered at this scope' },
      { loc: 'duration', msg: "duration is longer than the rule's maximum PT4H" },
    ]);
    expect(error.message).toBe(
      "jitgate refused the access request: target.role: role Owner is not offered at this scope; duration: duration is longer than the rule's maximum PT4H",
    );
  });

  it('still says why when a 422 carries no field errors', async () => {
    intake.answer = { status: 422, body: { error: 'invalid', detail: 'body is not valid JSON' } };
    const error = await new HttpSender({ baseUrl }).send(aRequest()).catch(e => e);
    expect(error.fieldErrors).toEqual([{ loc: 'body', msg: 'body is not valid JSON' }]);
  });

  it('says plainly that the requestId is taken on a 409', async () => {
    intake.answer = { status: 409, body: { error: 'conflict', detail: 'requestId reused with a different body' } };
    const error = await new HttpSender({ baseUrl }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(RequestIdConflict);
    expect(error.message).toContain('jitgate already has a different access request with id 1b4e28ba-2fa1-41d2-883f-0016d3cca427');
    expect(error.message).toContain('requestId reused with a different body');
    expect(error.message).toContain('run the template again');
  });

  it.each([
    [503, true, 'jitgate is busy or unavailable'],
    [403, false, 'not allowed to submit access requests'],
    [200, false, 'HTTP 200'],
    [302, false, 'jitgate redirected the call'],
  ])('treats HTTP %i as not delivered (transient: %s)', async (status, transient, words) => {
    intake.answer = { status, body: { error: 'unavailable', detail: 'the bus is throttling' }, location: '/.auth/login/aad' };
    const error = await new HttpSender({ baseUrl, retryDelaysMs: [] }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.transient).toBe(transient);
    expect(error.message).toContain(words);
    expect(error.message).toContain('(the bus is throttling)');
    expect(intake.received.map(r => r.method)).toEqual(['POST']);
  });

  it('gives up after its timeout', async () => {
    intake.answer = { status: 202, delayMs: 500 };
    const error = await new HttpSender({ baseUrl, timeoutMs: 50, retryDelaysMs: [] }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.message).toContain('no answer within 50 ms');
  });

  it('names a refused connection, after trying three times', async () => {
    const closed = new FakeIntake();
    const closedUrl = await closed.start();
    await closed.stop();
    const started = Date.now();
    const error = await new HttpSender({ baseUrl: closedUrl, retryDelaysMs: [20, 40] }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.transient).toBe(true);
    expect(error.message).toBe(
      `Could not deliver access request 1b4e28ba-2fa1-41d2-883f-0016d3cca427 to ${closedUrl}/api/access-requests: ` +
        `connection refused by ${new URL(closedUrl).host} (ECONNREFUSED): is jitgate running and listening there? ` +
        `(gave up after 3 attempts); caused by Error: connect ECONNREFUSED ${new URL(closedUrl).host}`,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(60);
  });

  it('names a host name that does not resolve, and does not try again', async () => {
    const error = await new HttpSender({ baseUrl: 'http://jitgate.invalid', retryDelaysMs: [20, 40] }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.message).toMatch(/jitgate\.invalid\/api\/access-requests: DNS: .*jitgate\.invalid.*\((ENOTFOUND|EAI_AGAIN)\)/);
    expect(error.transient).toBe(/EAI_AGAIN/.test(error.message));
  });

  it('names a TLS failure (https to a server that speaks plain HTTP), and does not try again', async () => {
    const error = await new HttpSender({ baseUrl: baseUrl.replace('http:', 'https:'), retryDelaysMs: [20] }).send(aRequest()).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.transient).toBe(false);
    expect(error.message).toMatch(/: TLS with 127\.0\.0\.1:\d+ failed \(ERR_SSL_[A-Z_]+\)/);
    expect(error.message).not.toContain('gave up after');
    expect(intake.received).toHaveLength(0);
  });

  it('delivers on a later attempt after the connection was dropped or jitgate was busy, under the same requestId', async () => {
    // GIVEN an intake that drops the first connection and answers 503 to the second
    const flaky = new FakeIntake();
    const flakyUrl = await flaky.start();
    const answers = [{ status: 0 }, { status: 503 }, { status: 202 }];
    const sender = new HttpSender({ baseUrl: flakyUrl, retryDelaysMs: [10, 20, 40] });
    flaky.onRequest = () => answers.shift()!;

    // WHEN the request is sent, THEN the third attempt delivers it, each with the same body
    try {
      await sender.send(aRequest());
      expect(flaky.received.map(r => JSON.parse(r.body).requestId)).toEqual(Array(3).fill(aRequest().requestId));
    } finally {
      await flaky.stop();
    }
  });

  it('stops trying again once the task is cancelled', async () => {
    intake.answer = { status: 503 };
    const cancel = new AbortController();
    const sending = new HttpSender({ baseUrl, retryDelaysMs: [5_000, 5_000] }).send(aRequest(), { signal: cancel.signal });
    setTimeout(() => cancel.abort(), 50);
    const error = await sending.catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(intake.received.length).toBeLessThanOrEqual(2);
  });

  it("fails the action's step with jitgate's own reasons on a 422", async () => {
    // GIVEN the action wired to the HTTP intake, which refuses the role
    intake.answer = {
      status: 422,
      body: { error: 'invalid', detail: 'target.role: ...', errors: [{ loc: 'target.role', msg: 'role Owner is not offered at this scope' }] },
    };
    const action = createRequestAccessAction({ sender: new HttpSender({ baseUrl }), statusUrlOf: id => `${baseUrl}/api/access-requests/${id}` });
    const ctx = createMockActionContext({ input: askedFor() as any, user: { entity: userEntity() }, workspacePath: UNUSED_WORKSPACE });

    // WHEN the step runs, THEN it fails with that reason and outputs nothing
    await expect(action.handler(ctx)).rejects.toThrow('jitgate refused the access request: target.role: role Owner is not offered at this scope');
    expect(intake.received).toHaveLength(1);
    expect(JSON.parse(intake.received[0]!.body).requester.backstageRef).toBe('user:default/jane');
    expect(ctx.output).not.toHaveBeenCalled();
  });
});
