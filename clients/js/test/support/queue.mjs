// An async queue: producers push, a test awaits `next()`, which fails the
// test when nothing arrives within EVENT_TIMEOUT_MS (a deadline against a
// hang, never a synchronization point).
export const EVENT_TIMEOUT_MS = 10_000;

export class Queue {
  #items = [];
  #waiters = [];

  push(item) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  get length() {
    return this.#items.length;
  }

  next(what = 'an event') {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    return within(new Promise((resolve) => this.#waiters.push(resolve)), what);
  }
}

/** Rejects when `promise` does not settle within EVENT_TIMEOUT_MS. */
export function within(promise, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), EVENT_TIMEOUT_MS);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve function, for events a test waits on. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves with the arguments of the next `event` on `emitter` (a client or subscription). */
export function nextEvent(emitter, event, what = event) {
  return within(
    new Promise((resolve) => {
      const off = emitter.on(event, (...args) => {
        off();
        resolve(args.length <= 1 ? args[0] : args);
      });
    }),
    what,
  );
}

/** Records every `event` of `emitter` into an array. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (value) => seen.push(value));
  return seen;
}
