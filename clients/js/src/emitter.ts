/** Event name -> listener arguments. */
export type EventMap = Record<string, unknown[]>;

/**
 * A minimal typed event emitter, the same in browsers and Node. A listener
 * that throws does not disturb the client: its error is rethrown on a later
 * tick, where the platform reports it.
 */
export class Emitter<E extends EventMap> {
  private listeners: { [K in keyof E]?: Array<(...args: E[K]) => void> } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void {
    (this.listeners[event] ??= []).push(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof E>(event: K, listener: (...args: E[K]) => void): void {
    const list = this.listeners[event];
    if (list) this.listeners[event] = list.filter((l) => l !== listener);
  }

  /** @internal */
  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    for (const listener of this.listeners[event] ?? []) callSafely(listener, ...args);
  }
}

/** @internal Runs application code; its exception is rethrown on a later tick, not into the client. */
export function callSafely<A extends unknown[]>(fn: (...args: A) => void, ...args: A): void {
  try {
    fn(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}
