//! The admin port of a client program (`tsnode`, `gonode`): one [`Request`] a line in, one
//! JSON line out (`{"error": …}` when the request failed), as many as the connection sends.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::Client;
use crate::protocol::Request;

/// Answers the requests of one admin connection until it closes.
pub async fn answer(client: Arc<dyn Client>, sock: TcpStream) {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.parse::<Request>() {
            Ok(request) => client.handle(&request).await,
            Err(e) => Err(e),
        };
        let answer = answer.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}
