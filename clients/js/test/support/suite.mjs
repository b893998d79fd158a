// What every test file against the real processes sets up the same way:
// one redis-server for the file, and cleanups that run after each test,
// the last registered first.
import { after, afterEach, before } from 'node:test';
import { Gateway, RedisServer } from './processes.mjs';

/**
 * Registers the file's hooks. `parts.redis` is the file's Redis (from its
 * `before` hook on); `parts.cleanups` takes functions to run after the
 * current test; `parts.gateway()` starts a gateway stopped after it.
 */
export function realParts() {
  const parts = {
    redis: undefined,
    cleanups: [],
    async gateway(on, toml, auth = '') {
      const started = await Gateway.start(on, toml, auth);
      parts.cleanups.push(() => started.cleanup());
      return started;
    },
  };
  before(async () => {
    parts.redis = await RedisServer.start();
  });
  after(async () => {
    await parts.redis.stop();
  });
  afterEach(async () => {
    for (const cleanup of parts.cleanups.splice(0).reverse()) await cleanup();
  });
  return parts;
}
