//! `POST /machine/map` inside the Noise channel: one-off updates are applied and answered
//! empty; a streaming request gets a full map, then deltas as the tailnet changes, framed as
//! in `wire`, with keep-alives.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::wire::MapFrame;
use super::Control;
use crate::counters::{self, MapKind, SessionEnd};
use crate::mapper::{full_map, SessionView};
use crate::model::NodeId;
use crate::response::{empty, text, Body};
use crate::state::State;
use crate::tailcfg::{MachineKey, MapRequest, MapResponse};

/// How long a session gathers a burst of changes before sending one delta.
const COALESCE: Duration = Duration::from_millis(10);
/// How long peers' presence changes (online, offline, last seen) alone may wait. A reconnect
/// storm is thousands of them; batching them makes each client's stream a few messages
/// instead of hundreds. Any other change ends the wait `COALESCE` after it arrives.
const PRESENCE_COALESCE: Duration = Duration::from_millis(1000);
/// Keep-alive period; jitter is added so sessions do not all wake at once.
const KEEPALIVE: Duration = Duration::from_secs(50);

/// Answers a map request from `machine_key`.
pub async fn handle(ctrl: &Arc<Control>, machine_key: MachineKey, body: &[u8]) -> Response<Body> {
    let req: MapRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid MapRequest: {e}")),
    };
    let snap = ctrl.state.snapshot();
    let Some(entry) = snap.node_by_key(&req.node_key) else {
        return text(StatusCode::UNAUTHORIZED, "node key is not registered");
    };
    if entry.node.machine_key != machine_key {
        tracing::warn!(%machine_key, node = entry.node.id, "map request for another machine's node refused");
        return text(StatusCode::FORBIDDEN, "node key does not belong to this machine");
    }
    let id = entry.node.id;
    if let Err(e) = ctrl.state.apply_map_request(id, &req).await {
        tracing::error!(node = id, error = %e, "could not apply map request");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "could not apply map request");
    }
    if !req.stream {
        if req.omit_peers {
            counters::endpoint_update();
        }
        return empty(StatusCode::OK);
    }
    let zstd = req.compress == "zstd";
    // Subscribe before reading the snapshot so nothing published in between is lost.
    let changes = ctrl.state.subscribe();
    let snap = ctrl.state.snapshot();
    let Some(me) = snap.node(id).cloned() else {
        return text(StatusCode::UNAUTHORIZED, "node was removed");
    };
    let now = Utc::now();
    let first = full_map(&snap, &me, &ctrl.map, now);
    let view = SessionView::new(id, &snap, &first, now);
    let first = counted(MapKind::Full, MapFrame::new(id, first, zstd));
    if let Err(e) = ctrl.state.connect(id).await {
        tracing::warn!(node = id, error = %e, "node vanished while connecting");
        return text(StatusCode::UNAUTHORIZED, "node was removed");
    }
    tracing::debug!(node = id, "map session started");
    let session = Session::new(ctrl.clone(), id, view, changes, zstd);
    // The response body is the session: the connection asks it for the next chunk when it
    // can send one, and dropping it (the client went away) ends the session.
    let stream = futures_util::stream::unfold((first, session), |(mut message, mut session)| async move {
        loop {
            if let Some(chunk) = message.next_chunk() {
                return Some((Ok::<_, std::io::Error>(Frame::data(chunk)), (message, session)));
            }
            match session.next_message().await {
                Some(next) => message = next,
                None => {
                    session.mark_ended_here();
                    return None;
                }
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

/// Counts a framed map message in the metrics.
fn counted(kind: MapKind, frame: MapFrame) -> MapFrame {
    counters::map_sent(kind, frame.len());
    frame
}

/// Marks the node offline when the session ends, however it ends.
struct Online {
    state: Arc<State>,
    id: NodeId,
}

impl Drop for Online {
    fn drop(&mut self) {
        let (state, id) = (self.state.clone(), self.id);
        tokio::spawn(async move { state.disconnect(id).await });
    }
}

/// One streaming map session: what its client holds, the change stream, and its keep-alive.
struct Session {
    ctrl: Arc<Control>,
    id: NodeId,
    view: SessionView,
    changes: broadcast::Receiver<Arc<crate::state::ChangeSet>>,
    keepalive: tokio::time::Interval,
    zstd: bool,
    /// The server ended the stream (rather than the client leaving).
    ended_here: bool,
    _online: Online,
}

impl Session {
    fn new(
        ctrl: Arc<Control>,
        id: NodeId,
        view: SessionView,
        changes: broadcast::Receiver<Arc<crate::state::ChangeSet>>,
        zstd: bool,
    ) -> Self {
        let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..9000));
        let keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE + jitter, KEEPALIVE + jitter);
        let _online = Online { state: ctrl.state.clone(), id };
        Session { ctrl, id, view, changes, keepalive, zstd, ended_here: false, _online }
    }

    /// The next framed message for the client: a delta once the tailnet changed in a way it
    /// sees, or a keep-alive. `None` ends the stream (the node was removed, or the server
    /// stops).
    async fn next_message(&mut self) -> Option<MapFrame> {
        loop {
            tokio::select! {
                _ = self.keepalive.tick() => {
                    let keepalive = MapResponse { keep_alive: true, ..Default::default() };
                    return Some(counted(MapKind::KeepAlive, MapFrame::new(self.id, keepalive, self.zstd)));
                }
                r = self.changes.recv() => if !take(&mut self.view, r) { return None },
            }
            if !self.gather().await {
                return None;
            }
            if !self.view.has_pending() {
                continue;
            }
            let snap = self.ctrl.state.snapshot();
            match self.view.flush(&snap, &self.ctrl.map, Utc::now()) {
                None => {
                    tracing::info!(node = self.id, "node was removed; ending its map session");
                    return None;
                }
                Some(delta) if delta.is_empty() => {}
                Some(delta) => return Some(counted(MapKind::Delta, MapFrame::new(self.id, delta, self.zstd))),
            }
        }
    }

    /// Records that the server, not the client, ended the stream (counted when it drops).
    fn mark_ended_here(&mut self) {
        self.ended_here = true;
    }

    /// Gathers the rest of a burst before one delta is rendered. The session looks at what
    /// was published every `COALESCE`, taking it all at once, rather than waking for each
    /// change set: in a storm thousands are published per second, to every session. False
    /// when the change stream closed.
    async fn gather(&mut self) -> bool {
        let until = Instant::now() + if self.view.is_urgent() { COALESCE } else { PRESENCE_COALESCE };
        loop {
            let look = until.min(Instant::now() + COALESCE);
            tokio::time::sleep_until(look).await;
            loop {
                match self.changes.try_recv() {
                    Ok(set) => self.view.apply(&set),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => self.view.lagged(),
                    Err(broadcast::error::TryRecvError::Closed) => return false,
                }
            }
            // Something urgent arrived since the last look, up to `COALESCE` ago: send now.
            if look >= until || self.view.is_urgent() {
                return true;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        counters::session_ended(if self.ended_here { SessionEnd::Server } else { SessionEnd::Client });
        tracing::debug!(node = self.id, "map session ended");
    }
}

/// Folds one received event into the view; false when the change stream is closed.
fn take(view: &mut SessionView, r: Result<Arc<crate::state::ChangeSet>, broadcast::error::RecvError>) -> bool {
    match r {
        Ok(set) => {
            view.apply(&set);
            true
        }
        Err(broadcast::error::RecvError::Lagged(_)) => {
            view.lagged();
            true
        }
        Err(broadcast::error::RecvError::Closed) => false,
    }
}
