import type { TokenCredential } from '@azure/identity';
import { encodeAccessRequest, type AccessRequestV1 } from './accessRequest';
import { DeliveryFailed, InvalidAccessRequest, RequestIdConflict, type FieldError } from './errors';
import type { AccessRequestSender } from './sender';

/** The path of jitgate's intake (ARCHITECTURE §7), below its base URL. */
export const INTAKE_PATH = '/api/access-requests';
/** The header through which a local jitgate takes a development identity (it refuses it elsewhere). */
export const DEV_PRINCIPAL_HEADER = 'X-Jitgate-Dev-Principal';
export const DEV_ROLES_HEADER = 'X-Jitgate-Dev-Roles';
/** The app role that lets a service submit requests on behalf of engineers. */
export const SUBMITTER_ROLE = 'Jit.Submitter';

export interface HttpSenderOptions {
  /** jitgate's base URL, without a trailing slash: `https://jitgate.example.com`. */
  baseUrl: string;
  /** When set, each call carries a bearer token for `scope` (App Service authentication). */
  token?: { credential: TokenCredential; scope: string };
  /** Local jitgate only: the Entra object id to call as, sent as the development identity. */
  devPrincipal?: string;
  /** How long one attempt may take. */
  timeoutMs?: number;
  /**
   * How long to wait before each further attempt after a transient failure (connection refused or reset, a
   * timeout, HTTP 429 or 5xx): one retry per entry. Safe because `requestId` is jitgate's idempotency key.
   */
  retryDelaysMs?: readonly number[];
}

/** Three attempts: again after half a second, then after two more seconds. */
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [500, 2_000];

/**
 * Sends an access request to jitgate's HTTP intake: `POST /api/access-requests`, which answers
 * 202 once the request is queued, 422 with field errors, 409 when the id is taken by another body.
 */
export class HttpSender implements AccessRequestSender {
  readonly destination: string;
  readonly #token: HttpSenderOptions['token'];
  readonly #devPrincipal: string | undefined;
  readonly #timeoutMs: number;
  readonly #retryDelaysMs: readonly number[];

  constructor(options: HttpSenderOptions) {
    this.destination = `${options.baseUrl}${INTAKE_PATH}`;
    this.#token = options.token;
    this.#devPrincipal = options.devPrincipal;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
    this.#retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  }

  async send(request: AccessRequestV1, options: { signal?: AbortSignal } = {}): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.#attempt(request, options);
      } catch (error) {
        const delay = this.#retryDelaysMs[attempt - 1];
        const again = error instanceof DeliveryFailed && error.transient && delay !== undefined && !options.signal?.aborted;
        if (!again) throw attempt > 1 && error instanceof DeliveryFailed ? error.afterAttempts(attempt) : error;
        await sleep(delay, options.signal);
      }
    }
  }

  async #attempt(request: AccessRequestV1, options: { signal?: AbortSignal }): Promise<void> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (this.#token) {
      headers.authorization = `Bearer ${await this.#bearer(this.#token, signal)}`;
    }
    if (this.#devPrincipal) {
      headers[DEV_PRINCIPAL_HEADER] = this.#devPrincipal;
      headers[DEV_ROLES_HEADER] = SUBMITTER_ROLE;
    }
    let response: Response;
    let body: string;
    try {
      // NB. Never follow a redirect: App Service authentication answers an unauthenticated POST with
      // a 302 to the sign-in page, and following it would turn the POST into a GET of that page.
      response = await fetch(this.destination, {
        method: 'POST',
        headers,
        body: encodeAccessRequest(request),
        signal,
        redirect: 'manual',
      });
      body = await response.text();
    } catch (error) {
      const why = timeout.aborted
        ? { words: `no answer within ${this.#timeoutMs} ms`, transient: true }
        : whyFetchFailed(error, new URL(this.destination));
      // NB. The cause is what fetch's own error wraps: "fetch failed" says nothing, its cause names the socket error.
      throw new DeliveryFailed(`Could not deliver access request ${request.requestId} to ${this.destination}: ${why.words}`, {
        transient: why.transient,
        cause: (error as { cause?: unknown })?.cause ?? error,
      });
    }
    if (response.status === 202) return;
    if (response.status === 422) throw new InvalidAccessRequest(fieldErrorsOf(body), 'jitgate');
    if (response.status === 409) throw new RequestIdConflict(request.requestId, detailOf(body));
    throw new DeliveryFailed(
      `jitgate did not accept access request ${request.requestId}: HTTP ${response.status} from ${this.destination}` +
        `${hintFor(response.status)}${detailOf(body) ? ` (${detailOf(body)})` : ''}`,
      { transient: response.status === 429 || response.status >= 500 },
    );
  }

  async close(): Promise<void> {
    // fetch keeps no connection we own.
  }

  async #bearer(token: NonNullable<HttpSenderOptions['token']>, signal: AbortSignal): Promise<string> {
    try {
      const accessToken = await token.credential.getToken(token.scope, { abortSignal: signal });
      if (accessToken) return accessToken.token;
    } catch (error) {
      throw new DeliveryFailed(`Could not get a token for ${token.scope} to call jitgate`, { transient: false, cause: error });
    }
    throw new DeliveryFailed(`Could not get a token for ${token.scope} to call jitgate`, { transient: false });
  }
}

/**
 * What went wrong below HTTP, in words, from the code node's fetch puts in `error.cause` (its own message is only
 * "fetch failed"), and whether trying again may help.
 */
function whyFetchFailed(error: unknown, url: URL): { words: string; transient: boolean } {
  const cause = (error as { cause?: unknown })?.cause ?? error;
  const { code, message } = (cause ?? {}) as { code?: unknown; message?: unknown };
  const detail = typeof message === 'string' && message ? message : String(cause);
  const where = `${url.hostname}:${url.port || (url.protocol === 'https:' ? 443 : 80)}`;
  switch (code) {
    case 'ECONNREFUSED':
      return { words: `connection refused by ${where} (ECONNREFUSED): is jitgate running and listening there?`, transient: true };
    case 'ENOTFOUND':
      return { words: `DNS: the host name ${url.hostname} does not resolve (ENOTFOUND); check jitgate.http.baseUrl`, transient: false };
    case 'EAI_AGAIN':
      return { words: `DNS: looking up ${url.hostname} failed for now (EAI_AGAIN)`, transient: true };
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
      return { words: `the connection to ${where} was closed before jitgate answered (${code})`, transient: true };
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return { words: `connecting to ${where} timed out (${code})`, transient: true };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return { words: `no route to ${where} (${code})`, transient: true };
  }
  if (typeof code === 'string' && /SSL|TLS|CERT|EPROTO/.test(code)) {
    return { words: `TLS with ${where} failed (${code}): ${detail}`, transient: false };
  }
  return { words: `the request failed: ${detail}${typeof code === 'string' ? ` (${code})` : ''}`, transient: true };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

function hintFor(status: number): string {
  if (status >= 300 && status < 400) {
    return '; jitgate redirected the call, as App Service authentication does for a caller without a token (set jitgate.http.tokenScope)';
  }
  if (status === 401 || status === 403) {
    return '; the Backstage backend is not allowed to submit access requests (check jitgate.http.tokenScope, or jitgate.http.devPrincipal for a local jitgate)';
  }
  if (status === 429 || status >= 500) return '; jitgate is busy or unavailable, try again shortly';
  return '';
}

/** The field errors of a 422: jitgate answers `{"error": "invalid", "detail": ..., "errors": [{"loc", "msg"}]}`. */
export function fieldErrorsOf(body: string): FieldError[] {
  const doc = parseJson(body);
  const errors = (Array.isArray(doc?.errors) ? doc.errors : []).flatMap((item: unknown): FieldError[] => {
    const { loc, msg } = (item ?? {}) as { loc?: unknown; msg?: unknown };
    return typeof msg === 'string' ? [{ loc: typeof loc === 'string' && loc ? loc : 'body', msg }] : [];
  });
  return errors.length > 0 ? errors : [{ loc: 'body', msg: detailOf(body) || 'refused without details' }];
}

// jitgate's errors are `{"error": <code>, "detail": <text>}`; anything else is shown as it came.
function detailOf(body: string): string {
  const detail = parseJson(body)?.detail;
  return typeof detail === 'string' ? detail : body.trim().slice(0, 300);
}

function parseJson(body: string): Record<string, any> | undefined {
  try {
    const doc: unknown = JSON.parse(body);
    return typeof doc === 'object' && doc !== null ? (doc as Record<string, any>) : undefined;
  } catch {
    return undefined;
  }
}
