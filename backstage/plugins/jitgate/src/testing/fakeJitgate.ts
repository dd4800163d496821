import type { AccessRequestView, AuditEvent, JitgateApi, ListFilter, Outcome, RequestState } from '../api';
import { JitgateError } from '../api';

export const JANE = 'dddddddd-0000-4000-8000-00000000000d';
export const ALICE = 'aaaaaaaa-0000-4000-8000-00000000000a';
export const SCOPE = '/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-web-dev';

/** A request as jitgate's API shows it, with the given state and fields. */
export function view(id: string, state: RequestState, fields: Partial<AccessRequestView> = {}): AccessRequestView {
  return {
    requestId: id,
    state,
    stateInWords: state === 'pending_approval' ? 'waiting for 1 more approval' : state,
    createdAt: '2026-12-06T08:00:00Z',
    updatedAt: '2026-12-06T08:00:00Z',
    grantedAt: state === 'active' ? '2026-12-06T08:00:00Z' : null,
    expiresAt: null,
    revokedAt: null,
    revokeReason: null,
    request: {
      requester: { principalId: JANE, displayName: 'Jane Doe' },
      target: { provider: 'local', scope: SCOPE, role: 'Reader' },
      duration: 'PT1H',
      justification: 'Look at the settings for INC-4711',
    },
    decision: { outcome: 'approval', rule: 'prod-contributor', reasons: [] },
    approval: { required: 1, approverGroups: ['platform-approvers'], given: [], youMay: false, whyNot: '' },
    timeline: [],
    ...fields,
  };
}

/** jitgate's API in memory: the requests it holds, every call made, and jitgate's answers and refusals. */
export class FakeJitgate implements JitgateApi {
  calls: Array<[string, ...unknown[]]> = [];
  requests: AccessRequestView[] = [];
  events: AuditEvent[] = [];
  refuseAudit = false;

  async list(filter: ListFilter) {
    this.calls.push(['list', filter]);
    const found = this.requests.filter(r =>
      (!filter.state || filter.state.includes(r.state))
      && (!filter.waitingForMe || r.approval.youMay)
      && (!filter.scope || r.request?.target.scope.toLowerCase() === filter.scope.toLowerCase()));
    return { requests: found, continuation: null };
  }

  async get(requestId: string) {
    this.calls.push(['get', requestId]);
    const found = this.requests.find(r => r.requestId === requestId);
    if (!found) throw new JitgateError(404, 'not_found', `no request ${requestId}`);
    return found;
  }

  async approve(requestId: string, comment: string): Promise<Outcome> {
    this.calls.push(['approve', requestId, comment]);
    return this.move(requestId, 'approved', 'approved; granting now');
  }

  async deny(requestId: string, reason: string): Promise<Outcome> {
    this.calls.push(['deny', requestId, reason]);
    return this.move(requestId, 'denied', 'denied');
  }

  async revoke(requestId: string, reason: string): Promise<Outcome> {
    this.calls.push(['revoke', requestId, reason]);
    return this.move(requestId, 'revoked', 'revoked (done)');
  }

  async extend(requestId: string, duration: string, reason: string): Promise<Outcome> {
    this.calls.push(['extend', requestId, duration, reason]);
    throw new JitgateError(422, 'invalid', 'body.duration: 9 hours is longer than this rule allows (8 hours)');
  }

  async auditEvents(filter: object) {
    this.calls.push(['auditEvents', filter]);
    if (this.refuseAudit) {
      throw new JitgateError(403, 'forbidden', 'the audit trail is only for callers with the Jit.Auditor or Jit.Admin role');
    }
    return { events: this.events, continuation: null };
  }

  async verify(requestId?: string) {
    this.calls.push(['verify', requestId]);
    return { ok: true, chains: 3, events: 17, broken: [], unanchored: 0, unanchoredRequestIds: [] };
  }

  private move(requestId: string, state: RequestState, message: string): Outcome {
    this.requests = this.requests.map(r => (r.requestId === requestId ? { ...r, state, stateInWords: state } : r));
    return { requestId, state, message };
  }
}
