import { ConflictError, CustomErrorBase, InputError } from '@backstage/errors';

/** One validation problem: where (dotted path, as the Python model names it) and what. */
export interface FieldError {
  loc: string;
  msg: string;
}

/**
 * An access request that can never become valid by retrying. `refusedBy` says who found out:
 * this action before sending anything, or jitgate's intake (HTTP 422).
 */
export class InvalidAccessRequest extends InputError {
  readonly fieldErrors: readonly FieldError[];
  readonly refusedBy: 'jitgate:access:request' | 'jitgate';

  constructor(fieldErrors: readonly FieldError[], refusedBy: InvalidAccessRequest['refusedBy']) {
    const who = refusedBy === 'jitgate' ? 'jitgate refused the access request' : 'The access request is invalid';
    super(`${who}: ${fieldErrors.map(e => `${e.loc}: ${e.msg}`).join('; ')}`);
    this.fieldErrors = fieldErrors;
    this.refusedBy = refusedBy;
  }
}

/** The task has no catalog user, or that user carries no usable Entra object id. */
export class UnknownRequester extends InputError {}

/** jitgate already holds a different request under this requestId (HTTP 409). */
export class RequestIdConflict extends ConflictError {
  readonly requestId: string;

  constructor(requestId: string, detail: string) {
    super(
      `jitgate already has a different access request with id ${requestId} (HTTP 409${detail ? `: ${detail}` : ''}). ` +
        'Nothing was granted for this one; run the template again to ask under a new id.',
    );
    this.requestId = requestId;
  }
}

/**
 * The request did not reach jitgate: unreachable, refused our identity, or answered with an
 * unexpected status. `transient` says whether trying again later may help.
 */
export class DeliveryFailed extends CustomErrorBase {
  readonly transient: boolean;
  // The message as given: CustomErrorBase appends the cause to `message`.
  readonly #given: string;

  constructor(message: string, options: { transient: boolean; cause?: unknown }) {
    super(message, options.cause);
    this.transient = options.transient;
    this.#given = message;
  }

  /** The same failure, saying that it was the last of `attempts`. */
  afterAttempts(attempts: number): DeliveryFailed {
    return new DeliveryFailed(`${this.#given} (gave up after ${attempts} attempts)`, {
      transient: this.transient,
      cause: this.cause,
    });
  }
}
