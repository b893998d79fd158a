// examples/browser/index.html in headless Chromium: the page loads the
// client's minified ESM build (dist/topicgate-client.min.js, made by
// `npm test`'s build step), connects to the real gateway, authorizes,
// subscribes, and shows what Redis publishes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Chromium, staticServer } from './support/chromium.mjs';
import { Gateway, REPO, RedisServer, signToken } from './support/processes.mjs';

const TOPIC = 'chat-browser';
let redis;
let gateway;
let files;
let browser;

before(async () => {
  redis = await RedisServer.start();
  gateway = await Gateway.start(redis, '[[acl.rules]]\ntopics = ["chat-*"]\neffect = "allow"\n');
  files = await staticServer(REPO, ['examples/browser', 'clients/js/dist']);
  browser = await Chromium.launch();
});

after(async () => {
  browser?.close();
  files?.close();
  await gateway?.cleanup();
  await redis?.stop();
});

test('the browser example connects with the bundled client and shows published messages', async () => {
  const page = await browser.open(`${files.origin}/examples/browser/index.html`);
  await page.eval(`
    document.getElementById('url').value = ${JSON.stringify(gateway.url)};
    document.getElementById('token').value = ${JSON.stringify(signToken({ sub: 'browser' }))};
    document.getElementById('topic').value = ${JSON.stringify(TOPIC)};
    document.getElementById('go').click();
  `);
  const log = "return document.getElementById('log').textContent";
  await page.waitFor('the page to subscribe', `${log}.includes('subscribed to ${TOPIC}');`);
  assert.equal(await page.eval("document.getElementById('status').dataset.state"), 'connected');
  const scripts = await page.eval(
    "performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname).filter((p) => p.endsWith('.js'))",
  );
  assert.deepEqual(scripts, ['/clients/js/dist/topicgate-client.min.js']);

  assert.equal(await redis.command('PUBLISH', TOPIC, '{"info":"Hello from Redis"}'), 1);
  await page.waitFor('the message in the page', `${log}.includes('message on ${TOPIC}: {"info":"Hello from Redis"}');`);

  // The gateway restarts: the page's client reconnects and resubscribes by itself.
  await gateway.restart();
  await page.waitFor('the resubscribe', `${log}.includes('resubscribed to ${TOPIC}');`);
  assert.equal(await redis.command('PUBLISH', TOPIC, '"after the restart"'), 1);
  await page.waitFor('the message after the restart', `${log}.includes('message on ${TOPIC}: "after the restart"');`);
});
