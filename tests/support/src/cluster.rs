//! A real Redis Cluster for the tests: `redis-server --cluster-enabled yes`
//! per node on free ports, joined by `redis-cli --cluster create`.

use std::path::PathBuf;
use std::process::{Command, Output};

use topicgate::{Config, RawConfig, key_slot};

use crate::{RedisServer, compile, eventually, with_test_acl};

/// Under the default 15 s, so a node the tests kill and restart is not
/// failed over, and a failover the tests ask for completes quickly.
const NODE_TIMEOUT_MS: &str = "3000";

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Holds each node's `nodes.conf`, so a restarted node rejoins as itself.
    dir: PathBuf,
    secure: Option<Secure>,
}

/// A cluster that speaks only TLS and wants a password.
pub struct Secure {
    /// CA, certificate and key ([`crate::make_tls_certs`]).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password: String,
}

impl RedisCluster {
    /// `masters` empty nodes, then `redis-cli --cluster create` over them
    /// (slots split evenly, in node order); returns once every node says
    /// `cluster_state:ok`.
    pub async fn start(masters: usize) -> Self {
        Self::start_with(masters, None).await
    }

    /// Like [`start`](Self::start); with `secure`, clients and the cluster
    /// bus use TLS only, and every node wants the password.
    pub async fn start_with(masters: usize, secure: Option<Secure>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "topicgate-cluster-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
            secure,
        };
        for _ in 0..masters {
            cluster.add_node();
        }
        let mut args = cluster.cli_base();
        args.extend(["--cluster".to_string(), "create".to_string()]);
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        args.push("--cluster-yes".into());
        redis_cli(&args);
        cluster.wait_until_ok().await;
        cluster
    }

    /// Starts one more empty cluster node (not yet part of the cluster);
    /// returns its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let dir = self.dir.join(index.to_string());
        std::fs::create_dir_all(&dir).expect("cluster node dir");
        let port = crate::free_port();
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            // The bus port defaults to port + 10000, which may be taken or
            // past 65535: give it a free port of its own.
            "--cluster-port",
            &crate::free_port().to_string(),
            "--cluster-node-timeout",
            NODE_TIMEOUT_MS,
            "--dir",
            &dir.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(secure) = &self.secure {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cluster".into(),
                "yes".into(),
                "--tls-replication".into(),
                "yes".into(),
                "--tls-cert-file".into(),
                path(&secure.cert),
                "--tls-key-file".into(),
                path(&secure.key),
                "--tls-ca-cert-file".into(),
                path(&secure.ca),
                "--tls-auth-clients".into(),
                "no".into(),
                "--requirepass".into(),
                secure.password.clone(),
                "--masterauth".into(),
                secure.password.clone(),
            ]);
        }
        self.nodes.push(RedisServer::spawned(port, args));
        index
    }

    /// Starts one more node and adds it to the cluster (`redis-cli
    /// --cluster add-node` through node 0): a master without slots, or a
    /// replica of node `replica_of`. Returns its index.
    pub fn join(&mut self, replica_of: Option<usize>) -> usize {
        let node = self.add_node();
        let mut args = self.cli_base();
        args.extend([
            "--cluster".to_string(),
            "add-node".to_string(),
            format!("127.0.0.1:{}", self.nodes[node].port),
            format!("127.0.0.1:{}", self.nodes[0].port),
        ]);
        if let Some(master) = replica_of {
            args.extend([
                "--cluster-slave".to_string(),
                "--cluster-master-id".to_string(),
                self.node_id(master),
            ]);
        }
        redis_cli(&args);
        node
    }

    /// Adds a replica of node `master` and waits until it is in sync and
    /// every node knows it; returns its index.
    pub async fn join_replica(&mut self, master: usize) -> usize {
        let replica = self.join(Some(master));
        eventually("the replica in sync with its master", || async {
            self.cli(replica, &["INFO", "replication"])
                .contains("master_link_status:up")
        })
        .await;
        self.wait_until_ok().await;
        replica
    }

    /// What every `redis-cli` call starts with: TLS and password, if any.
    fn cli_base(&self) -> Vec<String> {
        match &self.secure {
            None => Vec::new(),
            Some(secure) => vec![
                "--tls".into(),
                "--cacert".into(),
                secure.ca.to_string_lossy().into_owned(),
                "-a".into(),
                secure.password.clone(),
                "--no-auth-warning".into(),
            ],
        }
    }

    pub fn seed_urls(&self) -> Vec<String> {
        let scheme = if self.secure.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect()
    }

    /// `redis-cli -p <node> args…`, its output as text.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let mut all = self.cli_base();
        all.extend(["-p".to_string(), self.nodes[node].port.to_string()]);
        all.extend(args.iter().map(|a| a.to_string()));
        String::from_utf8_lossy(&redis_cli(&all).stdout).into_owned()
    }

    pub fn node_id(&self, node: usize) -> String {
        self.cli(node, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Each master's slot ranges, as each node sees its own slots.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, usize)> {
        let mut ranges = Vec::new();
        for node in 0..self.nodes.len() {
            let nodes = self.cli(node, &["CLUSTER", "NODES"]);
            let Some(myself) = nodes.lines().find(|l| l.contains("myself")) else {
                continue;
            };
            if !myself.contains("master") {
                continue;
            }
            for range in myself.split(' ').skip(8) {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                // "[slot->-id]" migration markers do not parse, and are skipped.
                if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                    ranges.push((first, last, node));
                }
            }
        }
        ranges
    }

    /// The node that serves `slot` now.
    pub fn owner_of_slot(&self, slot: u16) -> Option<usize> {
        owner_in(&self.slot_ranges(), slot)
    }

    /// A topic named `{stem}-N` whose channel (`prefix` + topic) hashes to a
    /// slot for which `wanted` holds.
    pub fn topic_where(stem: &str, prefix: &str, wanted: impl Fn(u16) -> bool) -> String {
        (0..1_000_000)
            .map(|n| format!("{stem}-{n}"))
            .find(|topic| wanted(key_slot(format!("{prefix}{topic}").as_bytes())))
            .expect("some name hashes there")
    }

    /// One topic per master (no channel prefix), in node order.
    pub fn topic_per_shard(&self, stem: &str) -> Vec<String> {
        let ranges = self.slot_ranges();
        let masters: std::collections::BTreeSet<usize> = ranges.iter().map(|r| r.2).collect();
        masters
            .into_iter()
            .map(|node| {
                Self::topic_where(&format!("{stem}{node}"), "", |slot| {
                    owner_in(&ranges, slot) == Some(node)
                })
            })
            .collect()
    }

    /// `redis-cli -c -p <node> SPUBLISH channel payload` (follows MOVED);
    /// returns the receiver count it printed.
    pub fn spublish(&self, node: usize, channel: &str, payload: &str) -> i64 {
        let text = self.cli(node, &["-c", "SPUBLISH", channel, payload]);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("SPUBLISH answered {text:?}"))
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the lowest first)
    /// from node `from` to node `to`.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        let mut args = self.cli_base();
        args.extend([
            "--cluster".to_string(),
            "reshard".to_string(),
            format!("127.0.0.1:{}", self.nodes[from].port),
            "--cluster-from".to_string(),
            self.node_id(from),
            "--cluster-to".to_string(),
            self.node_id(to),
            "--cluster-slots".to_string(),
            slots.to_string(),
            "--cluster-yes".to_string(),
        ]);
        redis_cli(&args);
    }

    /// `PUBSUB SHARDNUMSUB channel` on `node`.
    pub fn shard_numsub(&self, node: usize, channel: &str) -> i64 {
        let text = self.cli(node, &["PUBSUB", "SHARDNUMSUB", channel]);
        text.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("PUBSUB SHARDNUMSUB answered {text:?}"))
    }

    /// Waits until every node reports `cluster_state:ok` and knows every
    /// other node: a node added moments ago may not have reached them all
    /// by gossip yet, and a reshard towards it would fail with "Unknown
    /// node" on those that have not.
    pub async fn wait_until_ok(&self) {
        let nodes = self.nodes.len();
        eventually(
            "cluster_state:ok on every node, each knowing all",
            || async {
                (0..nodes).all(|node| {
                    self.cli(node, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                        && self.cli(node, &["CLUSTER", "NODES"]).lines().count() == nodes
                })
            },
        )
        .await;
    }

    /// A gateway config on this cluster: topics starting with `t` or
    /// `chat-` allowed, reconnect backoff capped at 1 s, plus `extra` TOML.
    pub fn gateway_config(&self, extra: &str) -> Config {
        let mut raw = RawConfig::from_toml(extra).expect("test config parses");
        raw.broker.kind = "redis-cluster".into();
        raw.redis.nodes = self.seed_urls();
        raw.redis.reconnect_max_secs = 1;
        compile(with_test_acl(raw))
    }
}

fn owner_in(ranges: &[(u16, u16, usize)], slot: u16) -> Option<usize> {
    ranges
        .iter()
        .find(|(first, last, _)| (*first..=*last).contains(&slot))
        .map(|range| range.2)
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `redis-cli args…`; panics with its output when it fails.
pub fn redis_cli(args: &[String]) -> Output {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run redis-cli ({err}); install redis-tools"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("[ERR]") && !stdout.starts_with("ERR"),
        "redis-cli {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
