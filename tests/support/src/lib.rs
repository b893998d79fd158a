//! What topicgate's integration tests share, one module per concern:
//!
//! - `redis_server`: real `redis-server` processes on free ports, and the
//!   Redis commands the tests check the bridge with;
//! - [`cluster`]: a real Redis Cluster of such processes;
//! - `gateway`: test configs, tokens, the gateway in process on port 0
//!   and the `topicgate` binary as a child process;
//! - `ws_client`: a WebSocket client speaking the gateway's protocol
//!   (`docs/PROTOCOL.md`);
//! - `http`: plain HTTP/1.1 requests and hand-made upgrades;
//! - `proxy`: a TCP proxy that can stop forwarding without closing;
//! - `tls`: a test CA and certificates, and a TLS-only Redis;
//! - `files`: fixtures and temporary files removed when the test ends;
//! - `wait`: the event timeout and polling for state no event announces.
//!
//! Tests import it as `use topicgate_test_support as common;` and mostly
//! `use common::*;`: everything but the cluster is re-exported here.

pub mod cluster;
mod files;
mod gateway;
mod http;
mod proxy;
mod redis_server;
mod tls;
mod wait;
mod ws_client;

pub use files::*;
pub use gateway::*;
pub use http::*;
pub use proxy::*;
pub use redis_server::*;
pub use tls::*;
pub use wait::*;
pub use ws_client::*;
