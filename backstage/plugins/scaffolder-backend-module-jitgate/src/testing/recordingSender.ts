import { encodeAccessRequest, type AccessRequestV1 } from '../accessRequest';
import type { AccessRequestSender } from '../sender';

/** A sender that keeps what it is given, as jitgate's queue would, and can be told to fail. */
export class RecordingSender implements AccessRequestSender {
  readonly destination = 'recording://access-requests';
  readonly sent: { messageId: string; body: string }[] = [];
  failWith?: Error;

  async send(request: AccessRequestV1): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.sent.push({ messageId: request.requestId, body: encodeAccessRequest(request) });
  }

  async close(): Promise<void> {}
}
