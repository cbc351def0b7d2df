//! The accept loop of the server's own TCP listeners (the main listener, the DERP TLS port and
//! the metrics listener; the remote gRPC listener is accepted by tonic) and the HTTP settings
//! the hyper-served ones share.
//!
//! Connections are bounded across all listeners: at start the file-descriptor limit is raised
//! to its hard limit ([`raise_fd_limit`]) and the listeners together hold at most that many
//! connections less [`RESERVED_FDS`] (the database, files, the local socket). A connection
//! over the limit is answered `503` and closed at once, and the server keeps serving those it
//! has. A connection upgraded to another protocol (ts2021, DERP) takes its [`Slot`] along, so
//! it counts for as long as it lives. Failed accepts back off up to a second, and are logged at most once per
//! [`crate::log_rate::PERIOD`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_rate::{LogRate, PERIOD};

/// File descriptors kept out of the connection limit for everything else the server opens.
pub const RESERVED_FDS: u64 = 128;
/// How long a client has to send a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest decoded header list of an HTTP/2 request on a listener.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// The longest pause between failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Sent to a connection over the limit before it is closed.
const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 31\r\n\r\ntoo many connections, try again";

static FAILED_ACCEPT: LogRate = LogRate::new(PERIOD);
static REFUSED: LogRate = LogRate::new(PERIOD);

/// Raises the soft limit on open files to the hard limit and returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// The soft limit on open files now in force, if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// The connection slots all listeners share and how many there are, sized from the
/// file-descriptor limit when first used (after [`raise_fd_limit`] at start).
fn slots() -> &'static (Arc<Semaphore>, usize) {
    static SLOTS: OnceLock<(Arc<Semaphore>, usize)> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let fds = open_file_limit().unwrap_or(1024);
        let n = fds.saturating_sub(RESERVED_FDS).clamp(16, Semaphore::MAX_PERMITS as u64) as usize;
        (Arc::new(Semaphore::new(n)), n)
    })
}

/// How many connections the listeners may hold together.
pub fn connection_limit() -> usize {
    slots().1
}

/// A connection's hold on one of the shared slots. Clones share it; the slot is free again
/// when the last one goes. Requests carry one in their extensions, so that a handler that
/// upgrades the connection can keep it in the task that serves the upgraded stream.
#[derive(Debug, Clone)]
pub struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Accepts connections on `listener` until `stopped`, running what `serve` makes of each (with
/// its peer address and its [`Slot`]) in a task of its own that holds the slot until it ends.
pub async fn accept_each<F>(
    listener: TcpListener,
    stopped: impl Future<Output = ()>,
    serve: impl FnMut(TcpStream, SocketAddr, Slot) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    accept_with(listener, stopped, slots().0.clone(), serve).await
}

async fn accept_with<F>(
    listener: TcpListener,
    stopped: impl Future<Output = ()>,
    slots: Arc<Semaphore>,
    mut serve: impl FnMut(TcpStream, SocketAddr, Slot) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stopped);
    let mut backoff = Duration::from_millis(50);
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if let Some(left_out) = FAILED_ACCEPT.allow() {
                    tracing::warn!(error = %e, left_out, "accept failed");
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(left_out) = REFUSED.allow() {
                tracing::warn!(%peer, left_out, "refused a connection: the server holds as many as it may");
            }
            let _ = tcp.try_write(REFUSAL);
            continue;
        };
        let slot = Slot { _permit: Arc::new(permit) };
        let served = serve(tcp, peer, slot.clone());
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
}

/// The HTTP server settings of the main and metrics listeners: HTTP/1.1 with a deadline for
/// request headers, HTTP/2 with a bounded header list and keep-alive pings.
pub fn http_server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_and_the_rest_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let slots = Arc::new(Semaphore::new(2));
        let server = tokio::spawn(accept_with(
            listener,
            async {
                let _ = stopped.await;
            },
            slots.clone(),
            |mut tcp, _, _| async move {
                // Echoes one line, then holds the connection until the client closes it.
                let mut buf = [0u8; 64];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
        ));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.expect("connects");
            c.write_all(b"hi").await.expect("writes");
            let mut echo = [0u8; 2];
            c.read_exact(&mut echo).await.expect("echoed");
            held.push(c);
        }
        let mut third = TcpStream::connect(addr).await.expect("connects");
        let mut answer = String::new();
        third.read_to_string(&mut answer).await.expect("closed after the answer");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        drop(held.pop());
        // The slot comes back when its connection ends.
        let mut fourth = None;
        for _ in 0..100 {
            if slots.available_permits() == 1 {
                fourth = Some(TcpStream::connect(addr).await.expect("connects"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut fourth = fourth.expect("a slot came back");
        fourth.write_all(b"ok").await.expect("writes");
        let mut echo = [0u8; 2];
        fourth.read_exact(&mut echo).await.expect("served");
        assert_eq!(&echo, b"ok");
        let _ = stop.send(());
        server.await.expect("stopped");
    }

    #[test]
    fn the_file_limit_is_raised_to_the_hard_limit() {
        let now = raise_fd_limit().expect("reads the limit");
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(now, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
