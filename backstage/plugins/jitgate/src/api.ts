/**
 * The jitgate HTTP API as the pages use it (docs/architecture.md §7). jitgate checks every caller itself: the
 * client only says who is calling, with the signed-in person's own Entra token for jitgate's app (Backstage's
 * Microsoft sign-in) or, against a local `jitgate serve` only, a development identity.
 */
import { createApiRef } from '@backstage/core-plugin-api';

export type RequestState =
  | 'received'
  | 'pending_approval'
  | 'approved'
  | 'active'
  | 'revoked'
  | 'rejected'
  | 'denied'
  | 'expired'
  | 'failed';

export interface Approval {
  approverId: string;
  at: string;
  comment: string;
}

export interface Person {
  principalId: string;
  displayName: string;
}

export interface AuditEvent {
  id: string;
  requestId: string;
  seq: number;
  type: string;
  at: string;
  actor: { principalId: string; kind: string };
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface AccessRequestView {
  requestId: string;
  state: RequestState;
  stateInWords: string;
  createdAt: string;
  updatedAt: string;
  grantedAt: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
  revokeReason: string | null;
  request: {
    requester: { principalId: string; displayName?: string; email?: string; backstageRef?: string };
    target: { provider: string; scope: string; role: string };
    duration: string;
    justification: string;
    ticket?: string;
    context?: { entityRef?: string };
  } | null;
  decision: { outcome: string; rule: string | null; reasons: string[] } | null;
  approval: {
    required: number;
    approverGroups: string[];
    given: Approval[];
    youMay: boolean;
    whyNot: string;
    stillMay?: Person[];
  };
  /** More time the requester asked for, waiting for approval (the policy wants it approved). */
  extension?: {
    until: string;
    askedAt: string;
    reason: string;
    rule: string | null;
    requiredApprovals: number;
    approverGroups: string[];
    approvals: Approval[];
  } | null;
  timeline?: AuditEvent[];
}

export interface RequestPage {
  requests: AccessRequestView[];
  continuation: string | null;
}

export interface ListFilter {
  mine?: boolean;
  waitingForMe?: boolean;
  state?: RequestState[];
  provider?: string;
  scope?: string;
  role?: string;
  limit?: number;
  continuation?: string;
}

export interface AuditFilter {
  requestId?: string;
  principalId?: string;
  type?: string;
  since?: string;
  until?: string;
  limit?: number;
  continuation?: string;
}

export interface Outcome {
  requestId: string;
  state: RequestState;
  message: string;
}

export interface ChainReport {
  requestId: string;
  events: number;
  ok: boolean;
  brokenSeq: number | null;
  brokenEventId: string | null;
  reason: string | null;
  anchored: boolean;
}

export interface Verification {
  ok: boolean;
  chains: number;
  events: number;
  broken: ChainReport[];
  unanchored: number;
  unanchoredRequestIds: string[];
}

export interface JitgateApi {
  list(filter: ListFilter): Promise<RequestPage>;
  get(requestId: string): Promise<AccessRequestView>;
  approve(requestId: string, comment: string): Promise<Outcome>;
  deny(requestId: string, reason: string): Promise<Outcome>;
  revoke(requestId: string, reason: string): Promise<Outcome>;
  extend(requestId: string, duration: string, reason: string): Promise<Outcome>;
  auditEvents(filter: AuditFilter): Promise<{ events: AuditEvent[]; continuation: string | null }>;
  verify(requestId?: string): Promise<Verification>;
}

export const jitgateApiRef = createApiRef<JitgateApi>({ id: 'plugin.jitgate.api' });

/** jitgate's answer to a call it refused, with its reason (`detail`) as the message. */
export class JitgateError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'JitgateError';
  }
}

/** Who the caller is, as headers: an Entra bearer token, or jitgate's development identity (local mode only). */
export type CallerHeaders = () => Promise<Record<string, string>>;

export interface JitgateClientOptions {
  /** jitgate's base URL, e.g. https://jitgate.example.com; '' for the app's own origin (a proxy in front). */
  baseUrl: string;
  callerHeaders: CallerHeaders;
  fetch?: typeof fetch;
}

export class JitgateClient implements JitgateApi {
  private readonly baseUrl: string;
  private readonly callerHeaders: CallerHeaders;
  private readonly fetchImpl: typeof fetch;

  constructor(options: JitgateClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.callerHeaders = options.callerHeaders;
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  list(filter: ListFilter): Promise<RequestPage> {
    const query = new URLSearchParams();
    if (filter.mine) query.set('mine', 'true');
    if (filter.waitingForMe) query.set('waitingForMe', 'true');
    if (filter.state?.length) query.set('state', filter.state.join(','));
    for (const key of ['provider', 'scope', 'role', 'continuation'] as const) {
      const value = filter[key];
      if (value) query.set(key, value);
    }
    if (filter.limit) query.set('limit', String(filter.limit));
    return this.call('GET', `/api/access-requests?${query}`);
  }

  get(requestId: string): Promise<AccessRequestView> {
    return this.call('GET', `/api/access-requests/${encodeURIComponent(requestId)}`);
  }

  approve(requestId: string, comment: string): Promise<Outcome> {
    return this.post(requestId, 'approve', comment ? { comment } : {});
  }

  deny(requestId: string, reason: string): Promise<Outcome> {
    return this.post(requestId, 'deny', { reason });
  }

  revoke(requestId: string, reason: string): Promise<Outcome> {
    return this.post(requestId, 'revoke', reason ? { reason } : {});
  }

  extend(requestId: string, duration: string, reason: string): Promise<Outcome> {
    return this.post(requestId, 'extend', reason ? { duration, reason } : { duration });
  }

  auditEvents(filter: AuditFilter): Promise<{ events: AuditEvent[]; continuation: string | null }> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) {
      if (value !== undefined && value !== '') query.set(key, String(value));
    }
    return this.call('GET', `/api/audit/events?${query}`);
  }

  verify(requestId?: string): Promise<Verification> {
    const query = requestId ? `?requestId=${encodeURIComponent(requestId)}` : '';
    return this.call('GET', `/api/audit/verify${query}`);
  }

  private post<T>(requestId: string, verb: string, body: object): Promise<T> {
    return this.call('POST', `/api/access-requests/${encodeURIComponent(requestId)}/${verb}`, body);
  }

  private async call<T>(method: string, path: string, body?: object): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json', ...(await this.callerHeaders()) };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new JitgateError(0, 'unreachable', `jitgate cannot be reached at ${this.baseUrl || 'this site'}: ${String(error)}`);
    }
    const text = await response.text();
    let doc: any = undefined;
    try {
      doc = text ? JSON.parse(text) : undefined;
    } catch {
      doc = undefined;
    }
    if (!response.ok) {
      const detail = typeof doc?.detail === 'string' && doc.detail ? doc.detail : `${response.status} ${response.statusText}`;
      throw new JitgateError(response.status, String(doc?.error ?? 'error'), detail);
    }
    return doc as T;
  }
}
