import type { ServiceBusMessage } from '@azure/service-bus';
import { buildAccessRequest, encodeAccessRequest } from './accessRequest';
import { DeliveryFailed } from './errors';
import { requesterOf } from './requester';
import { ServiceBusSender, type QueueSender } from './serviceBusSender';
import { askedFor, userEntity } from './testing/fixtures';

/** Stands in for the SDK's queue sender: keeps messages, or fails as Service Bus does. */
class FakeQueue implements QueueSender {
  readonly messages: ServiceBusMessage[] = [];
  closed = false;
  failWith?: Error & { code?: string };

  async sendMessages(message: ServiceBusMessage): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.messages.push(message);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

const request = buildAccessRequest({
  requestId: '1b4e28ba-2fa1-41d2-883f-0016d3cca427',
  requester: requesterOf({ entity: userEntity() }),
  asked: askedFor(),
});

function senderWith(queue: FakeQueue) {
  const opened: string[] = [];
  const sender = new ServiceBusSender({
    namespace: 'jitgate-prod.servicebus.windows.net',
    queue: 'access-requests',
    openQueue: (namespace, name) => {
      opened.push(`${namespace}/${name}`);
      return queue;
    },
  });
  return { sender, opened };
}

describe('ServiceBusSender', () => {
  it('sends the request as UTF-8 JSON bytes with messageId = requestId', async () => {
    const queue = new FakeQueue();
    const { sender, opened } = senderWith(queue);

    await sender.send(request);

    expect(opened).toEqual(['jitgate-prod.servicebus.windows.net/access-requests']);
    expect(queue.messages).toHaveLength(1);
    const [message] = queue.messages;
    expect(message!.messageId).toBe(request.requestId);
    expect(message!.contentType).toBe('application/json');
    expect(Buffer.isBuffer(message!.body)).toBe(true);
    expect((message!.body as Buffer).toString('utf8')).toBe(encodeAccessRequest(request));
  });

  it('opens the queue once, on the first send, and closes it', async () => {
    const queue = new FakeQueue();
    const { sender, opened } = senderWith(queue);
    expect(opened).toEqual([]);
    await sender.send(request);
    await sender.send(request);
    expect(opened).toHaveLength(1);
    await sender.close();
    expect(queue.closed).toBe(true);
  });

  it('explains a refusal of our identity', async () => {
    const queue = new FakeQueue();
    queue.failWith = Object.assign(new Error('Unauthorized access. Send claim is required'), { code: 'UnauthorizedAccess' });
    const error = await senderWith(queue).sender.send(request).catch(e => e);
    expect(error).toBeInstanceOf(DeliveryFailed);
    expect(error.transient).toBe(false);
    expect(error.message).toContain(
      "Could not put access request 1b4e28ba-2fa1-41d2-883f-0016d3cca427 on sb://jitgate-prod.servicebus.windows.net/access-requests; the backend's identity needs the 'Azure Service Bus Data Sender' role",
    );
    expect(error.message).toContain('Send claim is required');
  });

  it('marks a busy service as transient', async () => {
    const queue = new FakeQueue();
    queue.failWith = Object.assign(new Error('busy'), { code: 'ServiceBusy' });
    const error = await senderWith(queue).sender.send(request).catch(e => e);
    expect(error.transient).toBe(true);
  });
});
