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
  timeoutMs?: number;
}

/**
 * Sends an access request to jitgate's HTTP intake: `POST /api/access-requests`, which answers
 * 202 once the request is queued, 422 with field errors, 409 when the id is taken by another body.
 */
export class HttpSender implements AccessRequestSender {
  readonly destination: string;
  readonly #token: HttpSenderOptions['token'];
  readonly #devPrincipal: string | undefined;
  readonly #timeoutMs: number;

  constructor(options: HttpSenderOptions) {
    this.destination = `${options.baseUrl}${INTAKE_PATH}`;
    this.#token = options.token;
    this.#devPrincipal = options.devPrincipal;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
  }

  async send(request: AccessRequestV1, options: { signal?: AbortSignal } = {}): Promise<void> {
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
      const why = timeout.aborted ? `no answer within ${this.#timeoutMs} ms` : 'the request failed';
      throw new DeliveryFailed(`Could not deliver access request ${request.requestId} to ${this.destination}: ${why}`, {
        transient: true,
        cause: error,
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
