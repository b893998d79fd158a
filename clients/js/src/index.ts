/**
 * topicgate-client: a client for the topicgate WebSocket gateway that
 * reconnects with backoff, re-authorizes (also when the token expires),
 * resubscribes, and recovers missed recorded messages with `since`,
 * delivering each exactly once and in order.
 */
export { TopicgateClient } from './client.js';
export type {
  ClientEvents,
  ConnectionState,
  TokenSource,
  TopicgateClientOptions,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export { TopicgateError } from './errors.js';
export { Subscription } from './subscription.js';
export type {
  GapInfo,
  MessageContext,
  MessageHandler,
  SubscribedInfo,
  SubscriptionEvents,
  SubscriptionState,
} from './subscription.js';
export type { Position } from './protocol.js';
export { backoffDelay } from './backoff.js';
