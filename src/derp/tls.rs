//! The DERP relay's own TLS port (`derp.server.tls_listen_addr`): serves the DERP HTTP
//! endpoints over HTTP/1.1 with upgrades.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::http::handle;
use super::server::DerpServer;

/// Accepts TLS connections on `listener` and serves the DERP endpoints on them until
/// `shutdown` completes. Each connection runs in its own task; failed handshakes and HTTP
/// errors are logged at debug level and never stop the listener. Connections already
/// upgraded to DERP keep running after shutdown.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<DerpServer>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    crate::listen::accept_each(listener, shutdown, |tcp, peer, slot| {
        let _ = tcp.set_nodelay(true);
        serve_tls_conn(acceptor.clone(), tcp, peer, server.clone(), slot)
    })
    .await;
    debug!("DERP TLS listener stopped");
}

async fn serve_tls_conn(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    server: Arc<DerpServer>,
    slot: crate::listen::Slot,
) {
    let tls_stream = match crate::tls::accept(&acceptor, tcp).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "DERP TLS handshake failed");
            return;
        }
    };
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(slot.clone());
        let server = server.clone();
        async move { Ok::<_, Infallible>(handle(server, req).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(crate::listen::HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls_stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        debug!(%peer, error = %e, "DERP HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::derp::frame::{self, Frame, FrameType};
    use crate::derp::server::admit_all;
    use crate::derp::server::tests::TestClient;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    fn connector() -> TlsConnector {
        TlsConnector::from(Arc::new(crate::tls::client_config(crate::tls::Trust::Anything).unwrap()))
    }

    struct Listener {
        addr: SocketAddr,
        server: Arc<DerpServer>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Listener {
        let tls = Arc::new(crate::tls::self_signed_config(&["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(DerpServer::new([9u8; 32], admit_all()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_tls(listener, tls, server.clone(), async move {
            let _ = stopped.await;
        }));
        Listener { addr, server, stop: Some(stop), task }
    }

    async fn dial(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        connector().connect(name, tcp).await.unwrap()
    }

    /// Read an HTTP/1.1 response head byte by byte (so nothing after it is
    /// consumed), then its body if it has a Content-Length.
    async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> (u16, String, Vec<u8>) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut byte))
                .await
                .expect("response timed out")
                .unwrap();
            assert_eq!(n, 1, "connection closed inside response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        (status, head, body)
    }

    #[tokio::test]
    async fn latency_check_twice_on_one_connection() {
        let l = start().await;
        let mut conn = dial(l.addr).await;
        let port = l.addr.port();
        for _ in 0..2 {
            let req = format!("GET https://127.0.0.1:{port}/derp/latency-check HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            conn.write_all(req.as_bytes()).await.unwrap();
            conn.flush().await.unwrap();
            let (status, _, body) = read_response(&mut conn).await;
            assert_eq!(status, 200);
            assert!(body.is_empty());
        }
        // Other routes on the same connection.
        conn.write_all(b"POST /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!(status, 426);
        assert!(!body.is_empty());
        conn.write_all(b"GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let (status, _, _) = read_response(&mut conn).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn bad_clients_do_not_stop_listener() {
        let l = start().await;
        // Plain text instead of TLS.
        let mut raw = TcpStream::connect(l.addr).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
        // Connect and hang up immediately.
        drop(TcpStream::connect(l.addr).await.unwrap());
        // A proper client still works.
        let mut conn = dial(l.addr).await;
        conn.write_all(b"HEAD /derp/probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let (status, _, _) = read_response(&mut conn).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn derp_over_tls_end_to_end() {
        let l = start().await;
        let port = l.addr.port();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let mut conn = dial(l.addr).await;
            let req = format!(
                "POST https://127.0.0.1:{port}/derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
            );
            conn.write_all(req.as_bytes()).await.unwrap();
            let (status, head, _) = read_response(&mut conn).await;
            assert_eq!(status, 101, "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("upgrade: derp"), "{head}");
            assert!(lower.contains("connection: upgrade"), "{head}");
            assert!(lower.contains("derp-version: 2"), "{head}");
            let secret = crypto_box::SecretKey::generate(&mut rand::rngs::OsRng);
            let c = TestClient::handshake(conn, &secret).await.expect("DERP handshake over TLS");
            clients.push(c);
        }
        let mut b = clients.pop().unwrap();
        let mut a = clients.pop().unwrap();
        assert!(l.server.is_connected(&a.key) && l.server.is_connected(&b.key));
        a.send(&Frame::send_packet(&b.key, b"over tls")).await;
        let f = b.recv_non_keepalive().await.unwrap();
        assert_eq!(f.frame_type(), Some(FrameType::RecvPacket));
        let (src, pkt) = frame::parse_keyed(FrameType::RecvPacket, &f.body).unwrap();
        assert_eq!(src, a.key);
        assert_eq!(&pkt[..], b"over tls");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let mut l = start().await;
        l.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut l.task).await.unwrap().unwrap();
        // The listener socket is gone.
        assert!(TcpStream::connect(l.addr).await.is_err());
    }
}
