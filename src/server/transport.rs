//! Connections: accept (bounded in number), optional TLS handshake, HTTP/1.1 with bounded request
//! heads and a header read timeout, and graceful shutdown that drains in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::ServerState;

/// The request line and headers must fit in this (hyper's smallest buffer); a larger request
/// head is answered 431 and the connection closed.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time allowed to send a complete request head; it also closes keep-alive connections idle
/// this long (slow-loris and idle-connection bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Further connections wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long shutdown waits for in-flight requests before closing their connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves connections from `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (closing idle keep-alive connections at once) for at most
/// [`DRAIN_TIMEOUT`], and returns.
pub async fn serve_connections(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopped) = watch::channel(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Responses are one small write; do not hold them back waiting for ACKs.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            tls.clone(),
            Arc::clone(&http),
            Arc::clone(&state),
            stopped.clone(),
            slot,
        ));
    }
    drop(listener);
    let open = MAX_CONNECTIONS - slots.available_permits();
    tracing::info!(
        open_connections = open,
        "stopped accepting connections; draining"
    );
    stop.send_replace(());
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    match tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            open_connections = MAX_CONNECTIONS - slots.available_permits(),
            timeout_seconds = DRAIN_TIMEOUT.as_secs(),
            "connections still busy at the drain deadline; closing them"
        ),
    }
}

/// One client connection; holds its `slot` until it closes.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    http: Arc<http1::Builder>,
    state: Arc<ServerState>,
    mut stopped: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(Arc::clone(&state));
    let Some(acceptor) = tls else {
        return serve_http(TokioIo::new(stream), &http, state, stopped).await;
    };
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        _ = stopped.changed() => return,
    };
    serve_http(TokioIo::new(stream), &http, state, stopped).await;
}

async fn serve_http<I>(
    io: I,
    http: &http1::Builder,
    state: Arc<ServerState>,
    mut stopped: watch::Receiver<()>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(state.handle(&request)))
    });
    let mut connection = std::pin::pin!(http.serve_connection(io, service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped.changed() => {
            // Finishes the request in flight (if any) with `Connection: close`, then closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection closed with an error");
    }
}

/// Counts a connection in `jwks_server_open_connections` while it lives.
struct OpenConnection(Arc<ServerState>);

impl OpenConnection {
    fn new(state: Arc<ServerState>) -> OpenConnection {
        state.metrics.connection_opened();
        OpenConnection(state)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}
