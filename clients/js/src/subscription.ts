import { Emitter, callSafely } from './emitter.js';
import { positionOf, type Position, type ServerFrame } from './protocol.js';

/** What a message handler learns besides the payload. */
export interface MessageContext {
  topic: string;
  /** Present on recorded messages (published through the history function). */
  offset?: number;
  epoch?: string;
}

/** Receives each message's payload (`snapshot`: parsed JSON, or the raw text). */
export type MessageHandler = (data: unknown, ctx: MessageContext) => void;

/** Why recovery was impossible: the position the subscription continues from. */
export interface GapInfo {
  topic: string;
  /** The topic's new epoch and offset, when the gateway named them. */
  epoch?: string;
  offset?: number;
  detail?: string;
}

/** A confirmation from the gateway: the first subscribe, or a resubscribe. */
export interface SubscribedInfo {
  topic: string;
  /** The topic's position when live delivery began, when it has a history. */
  epoch?: string;
  offset?: number;
  /** On a resubscribe with `since`: whether the missed messages follow. */
  recovered?: boolean;
}

/** Events of a subscription. */
export type SubscriptionEvents = {
  /** The gateway confirmed the subscription (again, after a reconnect or re-authorization). */
  subscribed: [SubscribedInfo];
  /** Messages were lost and cannot be recovered: reload state from your backend. */
  gap: [GapInfo];
  /** The gateway removed the subscription (ACL change, a token that no longer allows it); it has ended. */
  revoked: [string];
};

/**
 * `subscribing`: waiting for the gateway to confirm (first subscribe, or
 * resubscribe after a reconnect or re-authorization); `subscribed`: messages
 * flow; `unsubscribed`: ended by `unsubscribe()`, a revocation or `close()`.
 */
export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

/** @internal What the client needs from a subscription's owner. */
export interface SubscriptionOwner {
  unsubscribeTopic(sub: Subscription): Promise<void>;
}

/** One topic held by a {@link TopicgateClient}. */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly topic: string;
  /** @internal */
  status: SubscriptionState = 'subscribing';
  /** @internal Last recorded position delivered to the handler. */
  pos: Position | undefined;
  /** @internal Confirmed at least once, so the `subscribe()` promise has settled. */
  confirmed = false;
  /** @internal A subscribe request for this topic is in flight. */
  inflight = false;
  /** @internal Failed resubscribes in a row, for the retry backoff. */
  retries = 0;
  /** @internal Leaving to subscribe again from offset 0: recorded deliveries wait for the replay. */
  rejoining = false;
  /** @internal The detail of a revocation being checked with a resubscribe. */
  revokedDetail: string | undefined;
  /** @internal */
  readonly handler: MessageHandler;
  private readonly owner: SubscriptionOwner;

  /** @internal */
  constructor(owner: SubscriptionOwner, topic: string, handler: MessageHandler) {
    super();
    this.owner = owner;
    this.topic = topic;
    this.handler = handler;
  }

  /** Where this subscription stands. */
  get state(): SubscriptionState {
    return this.status;
  }

  /**
   * The last recorded position received (or the one the gateway reported at
   * subscribe), if the topic has a history: the `since` of the next resubscribe.
   */
  get position(): Position | undefined {
    return this.pos && { ...this.pos };
  }

  /** Ends the subscription; resolves once the gateway confirms (at once when disconnected). */
  unsubscribe(): Promise<void> {
    return this.owner.unsubscribeTopic(this);
  }

  /**
   * @internal The gateway confirmed a subscribe sent with `since` (or
   * without). Without `since`, or when recovery failed, the reply's position
   * is where this subscription now stands; with `recovered: true` the replay
   * follows and moves the position itself.
   */
  confirm(since: Position | undefined, reply: ServerFrame): void {
    this.status = 'subscribed';
    this.retries = 0;
    this.revokedDetail = undefined;
    const position = positionOf(reply);
    const recovered = since ? reply.recovered === true : undefined;
    if (!recovered) this.pos = position;
    this.emit('subscribed', { topic: this.topic, ...position, ...(since && { recovered }) });
    if (recovered === false) {
      this.emit('gap', { topic: this.topic, ...position, detail: reply.detail ?? 'recovery impossible' });
    }
  }

  /**
   * @internal A delivery. A recorded one at or below the position (a replay
   * overlapping live traffic, a frame a link brought late) was delivered
   * already and is dropped; one under a new epoch means the history was lost.
   */
  deliver(frame: ServerFrame): void {
    const topic = this.topic;
    const position = positionOf(frame);
    if (!position) {
      callSafely(this.handler, frame.snapshot, { topic });
      return;
    }
    if (this.rejoining) return;
    const last = this.pos;
    if (last && last.epoch === position.epoch && position.offset <= last.offset) return;
    this.pos = position;
    if (last && last.epoch !== position.epoch) {
      this.emit('gap', { topic, epoch: position.epoch, offset: position.offset - 1, detail: 'the history changed epoch' });
    }
    callSafely(this.handler, frame.snapshot, { topic, offset: position.offset, epoch: position.epoch });
  }

  /** @internal The `gap` frame: part of the history is gone; continue from the position it names. */
  lost(frame: ServerFrame): void {
    const position = positionOf(frame);
    if (position) this.pos = position;
    this.emit('gap', { topic: this.topic, ...position, detail: frame.message ?? 'history lost' });
  }

  /** @internal */
  fire<K extends keyof SubscriptionEvents>(event: K, ...args: SubscriptionEvents[K]): void {
    this.emit(event, ...args);
  }
}
