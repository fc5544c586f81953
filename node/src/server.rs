//! Serving: every server also serves `grpc.health.v1` and server reflection, and stops on a
//! shutdown signal; and the Prometheus text endpoint the services share.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::{Router, TcpIncoming};

/// Binds `addr` (port 0 picks a free one) and returns the listener and its address.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The reflection service over the rollup's descriptors.
pub fn reflection(
) -> Result<tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")
}

/// Serves `router` on `listener` until `shutdown` resolves.
///
/// Each accepted connection gets `TCP_NODELAY`, as tonic's own `serve` sets and its
/// `serve_with_incoming` does not: without it (Nagle's algorithm), the small flow-control frames
/// a server sends while a request larger than HTTP/2's window comes in waited for the client's
/// delayed acknowledgement, about 40 ms on Linux: a third of the 146 KB uploads (a batch proof)
/// and every other block a sequencer submitted to settlement (BENCHMARKS.md).
pub async fn serve(router: Router, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await.context("gRPC server")
}

/// Serves a Prometheus text page, `render`'s, at `GET /metrics` (any path) until shutdown.
pub async fn serve_metrics<R>(listener: TcpListener, render: R, mut shutdown: watch::Receiver<bool>) -> Result<()>
where
    R: Fn() -> String + Clone + Send + 'static,
{
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf)).await;
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
