//! The web console (README, Web console: `GET /console`) in a real browser:
//! headless Chromium, driven over the Chrome DevTools Protocol, opens the
//! console of a gateway bridged to a real `redis-server`, and a message
//! PUBLISHed to Redis must show up in the page. With history, the page
//! shows offsets, reconnects after the gateway restarts on the same
//! address, recovers with `since` exactly what it missed, and shows `gap`.
//!
//! Needs Debian's `chromium` package (`/usr/bin/chromium`); without it the
//! test fails and says so rather than passing silently.

use topicgate_test_support as common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";
/// A cold Chromium start on a small machine takes a few seconds.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC: &str = "test-browser";
const API_KEY: &str = "browser-test-key";

/// A headless Chromium owned by the test: its whole process group is killed
/// and its profile directory removed on drop, pass or fail.
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    /// Starts Chromium and returns it with its browser-level DevTools URL.
    async fn launch() -> (Self, String) {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} not found: the browser test drives a real Chromium. \
             Install the Debian package `chromium` (apt-get install -y chromium)."
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "topicgate-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the Chromium profile dir");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so drop can kill the renderers along with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {CHROMIUM}: {err}"));
        let mut chromium = Self { child, profile };
        let stderr = chromium.child.stderr.take().expect("piped stderr");
        // Chromium prints the DevTools address on stderr once it listens;
        // the thread keeps draining after that so Chromium never blocks.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let url = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = rx.recv().await {
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return Some(url.to_string());
                }
                log.push(line);
            }
            None
        })
        .await;
        match url {
            Ok(Some(url)) => {
                // Keep the receiver alive in a task so the reader never stops.
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                (chromium, url)
            }
            Ok(None) => panic!("Chromium exited before listening:\n{}", log.join("\n")),
            Err(_) => panic!(
                "Chromium did not print its DevTools address within {STARTUP_TIMEOUT:?}:\n{}",
                log.join("\n")
            ),
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group id is the browser's pid (process_group(0) above).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A Chrome DevTools Protocol client over one browser-level WebSocket;
/// pages are reached through flattened target sessions.
struct Cdp {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Events read while waiting for a reply, kept for `event`.
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"));
        let tcp = TcpStream::connect(host).await.expect("connect to DevTools");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("DevTools WebSocket handshake");
        Self {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("a DevTools message in time")
                .expect("DevTools connection open")
                .expect("DevTools message readable");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("DevTools sends JSON");
            }
        }
    }

    /// Sends a command and returns its result; a protocol error fails the test.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let message = self.read().await;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Waits for the event `method` on `session`.
    async fn event(&mut self, session: &str, method: &str) -> Value {
        let matches = |m: &Value| m["method"] == method && m["sessionId"] == session;
        if let Some(at) = self.events.iter().position(matches) {
            return self.events.remove(at);
        }
        loop {
            let message = self.read().await;
            if matches(&message) {
                return message;
            }
        }
    }
}

/// One page (tab) of the browser.
struct Page {
    cdp: Cdp,
    session: String,
}

impl Page {
    async fn open(mut cdp: Cdp, url: &str) -> Self {
        let target = cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        cdp.call(Some(&session), "Page.enable", json!({})).await;
        cdp.call(Some(&session), "Page.navigate", json!({"url": url}))
            .await;
        cdp.event(&session, "Page.loadEventFired").await;
        Self { cdp, session }
    }

    /// Evaluates `expression` in the page and returns its value; awaits it
    /// when it is a promise.
    async fn eval(&mut self, expression: &str) -> Value {
        let reply = self
            .cdp
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = reply.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        reply["result"]["value"].clone()
    }

    /// Waits until the function body `probe` returns something truthy and
    /// returns that. The page tells us nothing over DevTools when its DOM
    /// changes, so the wait runs inside the page: a MutationObserver
    /// re-runs the probe on every change and resolves the promise that
    /// `Runtime.evaluate` awaits. The deadline bounds it.
    async fn wait_for(&mut self, what: &str, probe: &str) -> Value {
        let expression = format!(
            "new Promise((resolve) => {{
                const probe = () => {{ {probe} }};
                const first = probe();
                if (first) {{ resolve(first); return; }}
                const observer = new MutationObserver(() => {{
                    const value = probe();
                    if (value) {{ observer.disconnect(); resolve(value); }}
                }});
                observer.observe(document.documentElement,
                    {{subtree: true, childList: true, attributes: true, characterData: true}});
            }})"
        );
        match tokio::time::timeout(EVENT_TIMEOUT, self.eval(&expression)).await {
            Ok(value) => value,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// JS that finds the console's card for [`TOPIC`] (no selector is built
/// from the topic: the page keeps it in `data-topic`).
const CARD: &str = "[...document.querySelectorAll('[data-testid=topic-card]')]
    .find((c) => c.dataset.topic === 'test-browser')";

#[tokio::test]
async fn console_in_chromium_subscribes_and_shows_messages_published_to_redis() {
    let redis = RedisServer::start();
    let gateway = start_gateway(base_config(
        Some(&redis),
        &format!("[server]\nconsole = true\n[api]\nkey = \"{API_KEY}\"\n"),
    ))
    .await;
    let (_chromium, devtools) = Chromium::launch().await;
    let cdp = Cdp::connect(&devtools).await;
    let token = token(json!({"sub": "browser"}));
    let url = format!(
        "http://{}/console?token={token}&topics={TOPIC}&connect=1",
        gateway.addr
    );
    let mut page = Page::open(cdp, &url).await;

    // The query string alone connects, authorizes and subscribes.
    let subscribed = page
        .wait_for(
            "the console to show the topic subscribed",
            &format!("const c = {CARD}; return c && c.dataset.state === 'subscribed';"),
        )
        .await;
    assert_eq!(subscribed, json!(true));
    let status = page
        .eval("document.getElementById('status').dataset.state")
        .await;
    assert_eq!(status, "authenticated");
    let session = page
        .eval("document.getElementById('session').textContent")
        .await;
    assert_eq!(session.as_str().map(str::len), Some(36), "uuid: {session}");
    // The token is taken out of the address bar once read.
    let search = page.eval("location.search").await;
    assert_eq!(search, "?topics=test-browser&connect=1");

    // A plain Redis PUBLISH reaches the page.
    let mut conn = redis.connection().await;
    let receivers = redis_publish(&mut conn, TOPIC, r#"{"info":"Hello from Redis","n":1}"#).await;
    assert_eq!(receivers, 1, "the gateway holds one Redis subscription");
    let shown = page
        .wait_for(
            "the message in the topic card",
            &format!(
                "const c = {CARD}; const m = c && c.querySelector('[data-testid=message] pre');
                 return m && m.textContent;"
            ),
        )
        .await;
    let shown: Value = serde_json::from_str(shown.as_str().expect("text")).expect("pretty JSON");
    assert_eq!(shown, json!({"info":"Hello from Redis","n":1}));

    // Markup in a payload is shown as text, never parsed.
    let markup = r#"<img id="injected" src="x">"#;
    redis_publish(&mut conn, TOPIC, markup).await;
    let count = page
        .wait_for(
            "the second message",
            &format!(
                "const c = {CARD}; const n = c && c.querySelector('[data-testid=message-count]');
                 return n && n.textContent === '2' && n.textContent;"
            ),
        )
        .await;
    assert_eq!(count, "2");
    let newest = page
        .eval(&format!(
            "{CARD}.querySelector('[data-testid=message] pre').textContent"
        ))
        .await;
    assert_eq!(newest, json!(serde_json::to_string_pretty(markup).unwrap()));
    assert_eq!(
        page.eval("document.getElementById('injected') === null")
            .await,
        true
    );

    // The frame log, newest first, holds the delivery as received.
    let first_received = page
        .eval(
            "document.querySelector('#frames [data-testid=frame][data-dir=received] pre').textContent",
        )
        .await;
    let first_received: Value = serde_json::from_str(first_received.as_str().unwrap()).unwrap();
    assert_eq!(
        first_received,
        json!({"action":"message","topic":TOPIC,"snapshot":markup})
    );
    let sent = page
        .eval(
            "[...document.querySelectorAll('#frames [data-testid=frame][data-dir=sent] pre')]
                .map((p) => JSON.parse(p.textContent).action)",
        )
        .await;
    assert_eq!(sent, json!(["subscribe", "authorization"]));

    // Publishing from the page goes through POST /publish.
    page.eval(&format!(
        "document.getElementById('api-key').value = '{API_KEY}';
         document.getElementById('publish-topic').value = '{TOPIC}';
         document.getElementById('publish-data').value = '{{\"from\":\"console\"}}';
         document.getElementById('publish').click();"
    ))
    .await;
    let published = page
        .wait_for(
            "the publish result",
            "const r = document.getElementById('publish-result'); return r.dataset.ok;",
        )
        .await;
    assert_eq!(published, "true");
    let shown = page
        .wait_for(
            "the message published from the page",
            &format!(
                "const c = {CARD}; const n = c.querySelector('[data-testid=message-count]');
                 return n.textContent === '3' && c.querySelector('[data-testid=message] pre').textContent;"
            ),
        )
        .await;
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown, json!({"from":"console"}));

    // Unsubscribing from the page lets the gateway drop the Redis channel.
    page.eval(&format!(
        "{CARD}.querySelector('[data-testid=topic-toggle]').click()"
    ))
    .await;
    let state = page
        .wait_for(
            "the topic to show unsubscribed",
            &format!(
                "const c = {CARD}; return c.dataset.state === 'unsubscribed' && c.dataset.state;"
            ),
        )
        .await;
    assert_eq!(state, "unsubscribed");
    eventually("the gateway to UNSUBSCRIBE in Redis", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, TOPIC).await == 0 }
    })
    .await;
}

#[tokio::test]
async fn console_is_404_unless_enabled_and_follows_reload() {
    let gateway = start_gateway(base_config(None, "")).await;
    let (status, _) = http_get(gateway.addr, "/console").await;
    assert_eq!(status, 404);
    let post =
        "POST /console HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(http_request(gateway.addr, post).await.0, 404);

    // server.console reloads live: turn it on, then off again.
    gateway.replace_config(base_config(None, "[server]\nconsole = true\n"));
    let (status, page) = http_get(gateway.addr, "/console").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>topicgate console</title>"));
    // One self-contained page: nothing is fetched from elsewhere.
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("innerHTML"));

    gateway.replace_config(base_config(None, ""));
    let (status, _) = http_get(gateway.addr, "/console").await;
    assert_eq!(status, 404);
}

/// JS: whether `el`'s computed colour is the page's `--bad` colour.
const IS_BAD_COLOUR: &str = "const probe = document.createElement('span');
    probe.style.color = 'var(--bad)'; document.body.append(probe);
    const bad = getComputedStyle(probe).color; probe.remove();";

#[tokio::test]
async fn console_in_chromium_shows_a_refused_token_and_what_is_off() {
    let redis = RedisServer::start();
    // jwt mode and no api.key: publishing is off.
    let gateway = start_gateway(base_config(Some(&redis), "[server]\nconsole = true\n")).await;
    let (_chromium, devtools) = Chromium::launch().await;
    let cdp = Cdp::connect(&devtools).await;
    let mut page = Page::open(cdp, &format!("http://{}/console", gateway.addr)).await;

    // Before any connection the pill says so, in the idle colour.
    let status = page
        .eval("const s = document.getElementById('status'); [s.dataset.state, s.textContent]")
        .await;
    assert_eq!(status, json!(["idle", "not connected"]));
    // Placeholders are examples, styled apart from values.
    let placeholder = page
        .eval(
            "const t = document.getElementById('token');
             [t.value, getComputedStyle(t, '::placeholder').fontStyle]",
        )
        .await;
    assert_eq!(placeholder, json!(["", "italic"]));
    let shown = page
        .wait_for(
            "the header to show the broker",
            "const i = document.getElementById('server-info');
             return i.dataset.state === 'up' && i.textContent;",
        )
        .await;
    assert_eq!(shown, "broker redis · redis up");

    // The Publish panel is disabled and says why.
    let off = page
        .wait_for(
            "the Publish panel to turn off",
            "const f = document.getElementById('publish-fields');
             const hint = document.getElementById('publish-off');
             return f.disabled && !hint.hidden && hint.textContent.replace(/\\s+/g, ' ');",
        )
        .await;
    assert!(
        off.as_str().is_some_and(|t| t.contains("set api.key")),
        "{off}"
    );
    assert_eq!(
        page.eval("document.getElementById('publish').matches(':disabled')")
            .await,
        true
    );

    // A wrong token: the pill turns red with the reason, the topic cannot
    // be subscribed, and Disconnect is now the primary action.
    page.eval(
        "document.getElementById('token').value = 'not-a-token';
         document.getElementById('topics-input').value = 'test-browser';
         document.getElementById('connect').click();",
    )
    .await;
    let pill = page
        .wait_for(
            "the pill to show the refusal",
            "const s = document.getElementById('status');
             return s.dataset.state === 'unauthorized' && s.textContent;",
        )
        .await;
    assert_eq!(pill, "unauthorized · invalid_token");
    let red = page
        .eval(&format!(
            "{IS_BAD_COLOUR} getComputedStyle(document.getElementById('status')).color === bad"
        ))
        .await;
    assert_eq!(red, true);
    let problem = page
        .eval("document.getElementById('auth-problem').textContent")
        .await;
    assert!(
        problem
            .as_str()
            .is_some_and(|p| p.starts_with("authorization refused: invalid_token")),
        "{problem}"
    );
    let card = page
        .eval(&format!(
            "const c = {CARD};
             [c.dataset.state, c.querySelector('[data-testid=topic-toggle]').disabled,
              c.querySelector('[data-testid=topic-detail]').textContent]"
        ))
        .await;
    assert_eq!(
        card,
        json!(["idle", true, "not subscribed: authorization refused"])
    );
    assert_eq!(
        page.eval("document.getElementById('subscribe').disabled")
            .await,
        true
    );
    let buttons = page
        .eval(
            "[document.getElementById('connect').classList.contains('primary'),
              document.getElementById('disconnect').classList.contains('primary')]",
        )
        .await;
    assert_eq!(buttons, json!([false, true]));

    // After a shutdown the header no longer claims Redis is up.
    gateway.shutdown().await;
    let after = page
        .wait_for(
            "the page to see the shutdown",
            "const s = document.getElementById('status');
             const i = document.getElementById('server-info');
             return s.dataset.state === 'closed' && i.dataset.state === 'disconnected'
                 && [s.textContent, i.textContent];",
        )
        .await;
    assert_eq!(after, json!(["closed · 1001 shutdown", "disconnected"]));
    // A shutdown is not the user's choice: the page keeps trying to
    // reconnect, and Disconnect is what stops it.
    let retrying = page
        .wait_for(
            "a reconnect to be scheduled",
            "const r = document.getElementById('reconnect-info');
             return r.textContent.startsWith('reconnecting in')
                 && !document.getElementById('disconnect').disabled;",
        )
        .await;
    assert_eq!(retrying, true);
    page.eval("document.getElementById('disconnect').click()")
        .await;
    let stopped = page
        .wait_for(
            "the reconnects to stop",
            "const s = document.getElementById('status');
             return document.getElementById('reconnect-info').textContent === ''
                 && document.getElementById('disconnect').disabled
                 && s.dataset.state === 'closed'
                 && [document.getElementById('connect').classList.contains('primary'), s.textContent];",
        )
        .await;
    assert_eq!(stopped, json!([true, "closed · 1001 shutdown"]));
}

const RECOVERY_TOPIC: &str = "t-recovery";
/// A topic with no history until the gateway is down.
const QUIET_TOPIC: &str = "t-quiet";

/// JS: the console's card for `topic` (a plain name: no quote to escape).
fn card(topic: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-testid=topic-card]')]
            .find((c) => c.dataset.topic === '{topic}')"
    )
}

/// JS (a function body): once `topic`'s card shows `count` messages, its
/// messages oldest first as `[offset, epoch, snapshot, replayed]`.
fn messages_once(topic: &str, count: usize) -> String {
    let card = card(topic);
    format!(
        "const c = {card};
         if (!c || c.querySelector('[data-testid=message-count]').textContent !== '{count}') return null;
         return [...c.querySelectorAll('[data-testid=message]')].reverse().map((m) =>
             [Number(m.dataset.offset), m.dataset.epoch,
              JSON.parse(m.querySelector('pre').textContent), m.dataset.replayed === 'true']);"
    )
}

/// The gateway on `addr` (an address a previous gateway listened on).
async fn gateway_on(addr: std::net::SocketAddr, config: topicgate::Config) -> topicgate::Gateway {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the previous gateway's port again");
    let gateway = topicgate::Gateway::start(listener, config).expect("gateway starts");
    let mut ready = gateway.broker_ready();
    tokio::time::timeout(EVENT_TIMEOUT, ready.wait_for(|r| *r))
        .await
        .expect("broker ready in time")
        .expect("broker alive");
    gateway
}

/// `FCALL topicgate_publish 1 topic payload`: the recorded offset.
async fn fcall(conn: &mut redis::aio::MultiplexedConnection, topic: &str, payload: &str) -> u64 {
    redis::cmd("FCALL")
        .arg("topicgate_publish")
        .arg(1)
        .arg(topic)
        .arg(payload)
        .query_async(conn)
        .await
        .expect("FCALL topicgate_publish")
}

/// Records `{"n": n}` on `topic` for each `n`, checking each gets offset `n`.
async fn record_run(
    conn: &mut redis::aio::MultiplexedConnection,
    topic: &str,
    run: std::ops::RangeInclusive<u64>,
) {
    for n in run {
        assert_eq!(fcall(conn, topic, &json!({"n": n}).to_string()).await, n);
    }
}

#[tokio::test]
async fn console_in_chromium_recovers_what_it_missed_while_the_gateway_restarted() {
    let mut redis = RedisServer::start();
    let config = || {
        base_config(
            Some(&redis),
            &format!(
                "[server]\nconsole = true\n[api]\nkey = \"{API_KEY}\"\n\
                 [redis]\nreconnect_max_secs = 1\n"
            ),
        )
    };
    let first = start_gateway(config()).await;
    let addr = first.addr;
    let (_chromium, devtools) = Chromium::launch().await;
    let cdp = Cdp::connect(&devtools).await;
    let token = token(json!({"sub": "browser"}));
    let url = format!(
        "http://{addr}/console?token={token}&topics={RECOVERY_TOPIC},{QUIET_TOPIC}&connect=1"
    );
    let mut page = Page::open(cdp, &url).await;
    let (recovery_card, quiet_card) = (card(RECOVERY_TOPIC), card(QUIET_TOPIC));
    page.wait_for(
        "the topics subscribed",
        &format!(
            "const a = {recovery_card}; const b = {quiet_card};
             return a && b && a.dataset.state === 'subscribed' && b.dataset.state === 'subscribed';"
        ),
    )
    .await;

    // The first recorded message comes from the Publish panel, which shows
    // the offset and epoch POST /publish answered with.
    page.eval(&format!(
        "document.getElementById('api-key').value = '{API_KEY}';
         document.getElementById('publish-topic').value = '{RECOVERY_TOPIC}';
         document.getElementById('publish-data').value = '{{\"n\":1}}';
         document.getElementById('publish').click();"
    ))
    .await;
    let published = page
        .wait_for(
            "the publish result",
            "const r = document.getElementById('publish-result');
             return r.dataset.ok && [r.dataset.ok, r.dataset.offset, r.dataset.epoch, r.textContent];",
        )
        .await;
    assert_eq!(published[0], "true", "{published}");
    assert_eq!(published[1], "1", "{published}");
    let epoch = published[2].as_str().expect("an epoch").to_string();
    let text = published[3].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&format!(
            "published to {RECOVERY_TOPIC} (offset 1, epoch {epoch})"
        )),
        "{text}"
    );
    // Two more from a Redis client.
    let mut conn = redis.connection().await;
    record_run(&mut conn, RECOVERY_TOPIC, 2..=3).await;
    let seen = page
        .wait_for("three recorded messages", &messages_once(RECOVERY_TOPIC, 3))
        .await;
    let expected = |offsets: std::ops::RangeInclusive<u64>, replayed: &[u64]| {
        offsets
            .map(|n| json!([n, epoch, {"n": n}, replayed.contains(&n)]))
            .collect::<Vec<_>>()
    };
    assert_eq!(seen, json!(expected(1..=3, &[])));
    let position = page
        .eval(&format!(
            "{recovery_card}.querySelector('[data-testid=topic-position]').textContent"
        ))
        .await;
    assert_eq!(position, json!(format!("epoch {epoch} · offset 3")));

    // The gateway goes away; three more are recorded while it is down, and
    // the quiet topic's first two, of which the page knows no position.
    first.shutdown().await;
    page.wait_for(
        "the page to see the close",
        "return document.getElementById('close-info').textContent.startsWith('code 1001 shutdown');",
    )
    .await;
    record_run(&mut conn, RECOVERY_TOPIC, 4..=6).await;
    record_run(&mut conn, QUIET_TOPIC, 1..=2).await;

    // A gateway comes back on the same address: the page reconnects,
    // subscribes with its last positions and shows exactly what it missed.
    let second = gateway_on(addr, config()).await;
    let seen = page
        .wait_for(
            "the missed messages replayed",
            &messages_once(RECOVERY_TOPIC, 6),
        )
        .await;
    assert_eq!(seen, json!(expected(1..=6, &[4, 5, 6])));
    let quiet = page
        .wait_for(
            "the quiet topic's missed messages",
            &messages_once(QUIET_TOPIC, 2),
        )
        .await;
    let quiet_epoch = quiet[0][1].as_str().expect("an epoch").to_string();
    assert_eq!(
        quiet,
        json!([[1, quiet_epoch, {"n": 1}, true], [2, quiet_epoch, {"n": 2}, true]])
    );
    let recovery = page
        .wait_for(
            "the recovery shown",
            &format!(
                "const shown = (c) => {{
                     const r = c.querySelector('[data-testid=topic-recovery]');
                     return c.dataset.state === 'subscribed' && [r.dataset.recovered, r.textContent];
                 }};
                 const a = shown({recovery_card}); const b = shown({quiet_card});
                 return a && b && [a, b];"
            ),
        )
        .await;
    assert_eq!(
        recovery,
        json!([
            ["true", "recovered: 3 replayed"],
            ["true", "recovered: 2 replayed"]
        ])
    );
    // What the page sent after authorizing again, oldest first: the
    // recorded topic resumes from offset 3; the quiet one, held without a
    // position, learns the epoch from the reply and subscribes again from 0.
    let sent = page
        .eval(
            "const sent = [...document.querySelectorAll('#frames [data-testid=frame][data-dir=sent] pre')]
                 .map((p) => JSON.parse(p.textContent)).reverse();
             const at = sent.findLastIndex((f) => f.action === 'authorization');
             sent.slice(at + 1).map((f) => [f.action, f.context, f.since ?? null])",
        )
        .await;
    assert_eq!(
        sent,
        json!([
            ["subscribe", RECOVERY_TOPIC, {"epoch": epoch, "offset": 3}],
            ["subscribe", QUIET_TOPIC, null],
            ["unsubscribe", QUIET_TOPIC, null],
            ["subscribe", QUIET_TOPIC, {"epoch": quiet_epoch, "offset": 0}],
        ])
    );
    assert_eq!(
        page.eval("document.getElementById('status').dataset.state")
            .await,
        "authenticated"
    );
    // Live delivery goes on after the replay.
    record_run(&mut conn, RECOVERY_TOPIC, 7..=7).await;
    let seen = page
        .wait_for("a live message", &messages_once(RECOVERY_TOPIC, 7))
        .await;
    assert_eq!(seen, json!(expected(1..=7, &[4, 5, 6])));

    // Redis restarts empty: the history is lost, and the page shows the
    // gap frame with the new position before the new epoch's messages.
    let mut ready = second.broker_ready();
    redis.restart();
    ready.wait_for(|up| !*up).await.expect("broker alive");
    ready.wait_for(|up| *up).await.expect("broker alive");
    let mut conn = redis.connection().await;
    record_run(&mut conn, RECOVERY_TOPIC, 1..=1).await;
    let after = page
        .wait_for(
            "the gap and the new epoch's first message",
            &format!(
                "const c = {recovery_card};
                 const items = [...c.querySelectorAll('[data-testid=messages] > li')];
                 if (c.querySelector('[data-testid=message-count]').textContent !== '8') return null;
                 return items.slice(0, 2).map((li) => li.dataset.testid === 'gap'
                     ? ['gap', li.textContent] : ['message', Number(li.dataset.offset), li.dataset.epoch]);"
            ),
        )
        .await;
    let new_epoch = after[0][2].as_str().expect("the new epoch").to_string();
    assert_ne!(new_epoch, epoch);
    let gap = after[1][1].as_str().unwrap_or_default();
    assert!(
        gap.ends_with(&format!(
            "gap: history lost, now at epoch {new_epoch} offset 0"
        )),
        "{after}"
    );
    assert_eq!(after[0][1], 1, "{after}");
}
