//! A WebSocket client speaking the gateway's protocol (`docs/PROTOCOL.md`).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::{EVENT_TIMEOUT, token};

/// A WebSocket client speaking the gateway's protocol.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The session id from the greeting.
    pub session: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_path(addr, "/").await
    }

    /// Connects, reads the two greeting frames and keeps the session id.
    pub async fn connect_path(addr: SocketAddr, path: &str) -> Self {
        let mut ws = Self::raw(addr, path).await;
        let first = next_json(&mut ws).await;
        assert_eq!(
            first,
            json!({"action":"connect","message":"connection established"})
        );
        let second = next_json(&mut ws).await;
        assert_eq!(second["action"], "session");
        assert_eq!(second["message"], "waiting for create session");
        let session = second["session"].as_str().expect("session id").to_string();
        Self { ws, session }
    }

    /// The upgraded socket before any frame was read.
    pub async fn raw(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let (ws, _response) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
            .await
            .expect("websocket handshake");
        ws
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends `{action, session, context}` with this connection's session.
    pub async fn request(&mut self, action: &str, context: &str) -> Value {
        let session = self.session.clone();
        self.send_json(&json!({"action": action, "session": session, "context": context}))
            .await;
        self.recv().await
    }

    pub async fn authorize(&mut self, token: &str) -> Value {
        self.request("authorization", token).await
    }

    pub async fn subscribe(&mut self, topic: &str) -> Value {
        self.request("subscribe", topic).await
    }

    pub async fn unsubscribe(&mut self, topic: &str) -> Value {
        self.request("unsubscribe", topic).await
    }

    /// Authorizes with a fresh token for `sub` and asserts success.
    pub async fn login(&mut self, sub: &str) {
        let reply = self.authorize(&token(json!({"sub": sub}))).await;
        assert_eq!(
            reply,
            json!({"action":"session","message":"session authenticated"})
        );
    }

    /// Subscribes and asserts the success reply.
    pub async fn subscribed(&mut self, topic: &str) {
        let reply = self.subscribe(topic).await;
        assert_eq!(
            reply,
            json!({"action":"subscribe","message":"context subscribed","context":topic}),
            "subscribe {topic}"
        );
    }

    /// The next text frame as JSON.
    pub async fn recv(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    /// Reads until the close frame: the text frames before it and its code.
    pub async fn recv_until_close(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("close in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("server sends JSON"))
                }
                Some(Ok(Message::Close(frame))) => return (frames, frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close arrives, so it has seen ours.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await {}
    }
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame readable");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => continue,
        }
    }
}

/// A delivery without its history position (`offset`, `epoch`): for tests
/// of other behaviour, where recording is a default, not the subject.
pub fn unpositioned(mut frame: Value) -> Value {
    if let Some(fields) = frame.as_object_mut() {
        fields.remove("offset");
        fields.remove("epoch");
    }
    frame
}
