//! The accept loop of the server's own TCP listeners: the main listener, the DERP TLS port and
//! the metrics listener. (The remote gRPC listener is accepted by tonic.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `listener` until `stopped`, handing each to `serve` with its peer
/// address; a failed accept is logged and retried.
pub async fn accept_each(
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => serve(tcp, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
