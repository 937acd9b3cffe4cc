//! The `trade_updates` WebSocket at `/stream`, as Alpaca's: the client authenticates
//! (`{"action":"auth","key":…,"secret":…}`, or the older
//! `{"action":"authenticate","data":{"key_id":…,"secret_key":…}}`), then listens
//! (`{"action":"listen","data":{"streams":["trade_updates"]}}`) and receives every order
//! event from then on.
//!
//! Frames: the server sends **binary** frames holding JSON, as Alpaca's paper endpoint does
//! (its live data stream uses text), so a consumer tested here copes with the real thing.
//! It reads text and binary frames alike.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::PaperBroker;

/// A connection that has not authenticated by then is closed.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes() -> Router<Arc<PaperBroker>> {
    Router::new().route("/stream", get(upgrade))
}

async fn upgrade(State(b): State<Arc<PaperBroker>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(socket, b))
}

fn json_of(msg: &Message) -> Option<Value> {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
        Message::Binary(b) => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

async fn send(socket: &mut WebSocket, v: &str) -> bool {
    socket
        .send(Message::Binary(Bytes::copy_from_slice(v.as_bytes())))
        .await
        .is_ok()
}

fn authorization(action: &str, status: &str) -> String {
    json!({"stream": "authorization", "data": {"action": action, "status": status}}).to_string()
}

/// The credentials of an auth message, in either of Alpaca's two forms.
fn credentials(v: &Value) -> (Option<&str>, Option<&str>) {
    match v["action"].as_str() {
        Some("auth") => (v["key"].as_str(), v["secret"].as_str()),
        Some("authenticate") => (v["data"]["key_id"].as_str(), v["data"]["secret_key"].as_str()),
        _ => (None, None),
    }
}

async fn session(mut socket: WebSocket, b: Arc<PaperBroker>) {
    loop {
        let msg = match tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await {
            Ok(Some(Ok(m))) => m,
            _ => return,
        };
        let Some(v) = json_of(&msg) else {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            continue;
        };
        let (key, secret) = credentials(&v);
        if b.authorized(key, secret) {
            if !send(&mut socket, &authorization("authenticate", "authorized")).await {
                return;
            }
            break;
        }
        // Wrong keys, or anything but auth first: refused, and the connection ends.
        let _ = send(&mut socket, &authorization("authenticate", "unauthorized")).await;
        let _ = socket.send(Message::Close(None)).await;
        return;
    }

    let mut updates: Option<broadcast::Receiver<Arc<str>>> = None;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let msg = match msg {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(m)) => m,
                };
                let Some(v) = json_of(&msg) else { continue };
                if v["action"] != "listen" {
                    continue;
                }
                let wanted = v["data"]["streams"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s == "trade_updates"));
                // Subscribed before the acknowledgement: every event after it is delivered.
                updates = match (wanted, updates.take()) {
                    (true, Some(rx)) => Some(rx),
                    (true, None) => Some(b.updates.subscribe()),
                    (false, _) => None,
                };
                let streams: Vec<&str> = if wanted { vec!["trade_updates"] } else { Vec::new() };
                let ack = json!({"stream": "listening", "data": {"streams": streams}}).to_string();
                if !send(&mut socket, &ack).await {
                    return;
                }
            }
            update = next(&mut updates) => match update {
                Ok(text) => {
                    if !send(&mut socket, &text).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    // A gap must not pass silently: the client reconnects and looks up.
                    tracing::warn!(missed, "trade_updates client fell behind; disconnecting it");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

async fn next(rx: &mut Option<broadcast::Receiver<Arc<str>>>) -> Result<Arc<str>, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
