import { DefaultAzureCredential } from '@azure/identity';
import { ServiceBusClient, type ServiceBusMessage } from '@azure/service-bus';
import { encodeAccessRequest, type AccessRequestV1 } from './accessRequest';
import { DeliveryFailed } from './errors';
import type { AccessRequestSender } from './sender';

/** The part of the SDK's queue sender we use; tests hand in their own. */
export interface QueueSender {
  sendMessages(message: ServiceBusMessage, options?: { abortSignal?: AbortSignal }): Promise<void>;
  close(): Promise<void>;
}

export interface ServiceBusSenderOptions {
  /** Fully qualified namespace: `<name>.servicebus.windows.net`. */
  namespace: string;
  queue: string;
  /** Opens the queue; by default a `ServiceBusClient` with `DefaultAzureCredential`. */
  openQueue?: (namespace: string, queue: string) => QueueSender;
}

// Codes after which the same message may well go through later.
const TRANSIENT_CODES = new Set(['ServiceBusy', 'ServiceTimeout', 'ServiceCommunicationProblem', 'GeneralError']);

/**
 * Puts access requests on the Service Bus queue `access-requests` with messageId = requestId,
 * so the queue's duplicate detection drops a resend. Signs in with `DefaultAzureCredential`
 * (managed identity in Azure); the identity needs "Azure Service Bus Data Sender" on the queue.
 * The connection is opened on the first send, not at backend start.
 */
export class ServiceBusSender implements AccessRequestSender {
  readonly destination: string;
  readonly #options: ServiceBusSenderOptions;
  #queue?: QueueSender;

  constructor(options: ServiceBusSenderOptions) {
    this.#options = options;
    this.destination = `sb://${options.namespace}/${options.queue}`;
  }

  async send(request: AccessRequestV1, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#queue ??= (this.#options.openQueue ?? openServiceBusQueue)(this.#options.namespace, this.#options.queue);
    // NB. The body goes as raw UTF-8 bytes (an AMQP data section): jitgate's Python receiver
    // reads bytes, whereas an object or string body would be re-encoded by the SDK.
    const message: ServiceBusMessage = {
      messageId: request.requestId,
      contentType: 'application/json',
      body: Buffer.from(encodeAccessRequest(request), 'utf8'),
    };
    try {
      await this.#queue.sendMessages(message, { abortSignal: options.signal });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const hint =
        code === 'UnauthorizedAccess'
          ? "; the backend's identity needs the 'Azure Service Bus Data Sender' role on the queue"
          : code === 'MessagingEntityNotFound'
            ? '; check jitgate.serviceBus.namespace and jitgate.serviceBus.queue'
            : '';
      throw new DeliveryFailed(`Could not put access request ${request.requestId} on ${this.destination}${hint}`, {
        transient: typeof code === 'string' && TRANSIENT_CODES.has(code),
        cause: error,
      });
    }
  }

  async close(): Promise<void> {
    await this.#queue?.close();
    this.#queue = undefined;
  }
}

function openServiceBusQueue(namespace: string, queue: string): QueueSender {
  const client = new ServiceBusClient(namespace, new DefaultAzureCredential());
  const sender = client.createSender(queue);
  return {
    sendMessages: (message, options) => sender.sendMessages(message, options),
    close: async () => {
      await sender.close();
      await client.close();
    },
  };
}
