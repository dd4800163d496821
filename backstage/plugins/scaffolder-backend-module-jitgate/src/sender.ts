import type { AccessRequestV1 } from './accessRequest';

/**
 * The port through which an access request leaves Backstage. `send` resolves once jitgate (or
 * its queue) has taken the request, and otherwise throws one of the errors in `errors.ts`:
 * `InvalidAccessRequest`, `RequestIdConflict` or `DeliveryFailed`.
 *
 * Sending the same request twice is harmless: `requestId` is jitgate's idempotency key.
 */
export interface AccessRequestSender {
  /** Where requests go, for logs and dry runs: a queue or an intake URL. */
  readonly destination: string;
  send(request: AccessRequestV1, options?: { signal?: AbortSignal }): Promise<void>;
  close(): Promise<void>;
}
