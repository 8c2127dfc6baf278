//! Connections: accepted under a cap that sheds the stalest connections rather than make a new
//! client wait, and handed to worker threads; optional TLS handshake; HTTP/1.1 with bounded
//! request heads, a header read timeout, a write timeout and an idle timeout (see
//! [`super::limits`] for why these); graceful shutdown that drains in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::ServerState;
use super::limits::{ConnectionCap, ConnectionLimits, Slot, WatchedStream};

/// The request line and headers must fit in this (hyper's smallest buffer); a larger request
/// head is answered 431 and the connection closed.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time allowed to send a complete request head; hyper restarts it when a keep-alive connection
/// goes idle, so it also closes keep-alive connections idle this long (slow-loris bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte moving either way for this long closes a connection in any state, not only while
/// hyper waits for a request head; as long as the header timeout, since no state of an honest
/// client is quieter than waiting for its next request.
pub const IDLE_TIMEOUT: Duration = HEADER_READ_TIMEOUT;
/// A response the peer takes no byte of for this long closes the connection, so a client that
/// never reads (say, one pipelining requests without reading the answers) holds its connection
/// this long at most. The kernel buffers whole responses (a JWKS is a few KiB), so a write waits
/// at all only when the peer has stopped reading or its network has stalled; the header timeout
/// already allows an honest client 10 s of silence.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections, a bound on the buffers and file descriptors clients can make the server
/// hold. Verifiers fetch the JWKS rarely and briefly, so this many at once means a burst or an
/// attack, not load; at the cap, accepting a new connection closes the ones that have gone
/// longest without moving a byte (a few at a time), so holding connections open never locks new
/// clients out.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long shutdown waits for in-flight requests before closing their connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: HEADER_READ_TIMEOUT,
    idle_timeout: IDLE_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    max_request_head_bytes: MAX_REQUEST_HEAD_BYTES,
};

/// Serves connections from `listener` on `workers` threads until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections close at once) for at
/// most [`DRAIN_TIMEOUT`], and returns.
///
/// The caller's runtime accepts; each connection then lives on one worker thread, a
/// single-threaded runtime, chosen as the one with the fewest open connections. A request never
/// hops between threads (as in nginx's workers), and no worker is left idle while another has a
/// queue.
pub async fn serve_connections(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        http: LIMITS.http1(),
        tls,
        state,
        stop: watch::channel(false).0,
    });
    let (exit, _) = watch::channel(false);
    let mut pool = Vec::new();
    for index in 0..workers.max(1) {
        pool.push(WorkerHandle::start(
            index,
            Arc::clone(&shared),
            exit.subscribe(),
        )?);
    }

    let cap = ConnectionCap::new(LIMITS.max_connections);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Accept first, then admit: the cap sheds a connection only for a client that is there.
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            (stream, _) = cap.accept(|| listener.accept()) => stream,
        };
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = cap.admit() => slot,
        };
        // Responses are one small write; do not hold them back waiting for ACKs.
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "cannot hand a connection to a worker");
                continue;
            }
        };
        if let Some(worker) = pool.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)) {
            worker.hand_over(stream, slot);
        }
    }
    drop(listener);

    tracing::info!(
        open_connections = cap.open(),
        "stopped accepting connections; draining"
    );
    shared.stop.send_replace(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, cap.all_closed()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            open_connections = cap.open(),
            timeout_seconds = DRAIN_TIMEOUT.as_secs(),
            "connections still busy at the drain deadline; closing them"
        ),
    }
    exit.send_replace(true);
    for worker in pool {
        worker.finished().await;
    }
    Ok(())
}

/// What all workers share.
struct Shared {
    http: http1::Builder,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    /// `true`: finish the open connections gracefully.
    stop: watch::Sender<bool>,
}

/// A connection handed to a worker, with its slot (one of [`MAX_CONNECTIONS`]) and the worker's
/// open-connection count to decrement when it closes.
struct Accepted {
    stream: std::net::TcpStream,
    slot: Slot,
    load: Arc<AtomicUsize>,
}

/// The accepting side's view of one worker thread.
struct WorkerHandle {
    inbox: mpsc::UnboundedSender<Accepted>,
    /// Connections open on this worker.
    load: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

impl WorkerHandle {
    fn start(
        index: usize,
        shared: Arc<Shared>,
        exit: watch::Receiver<bool>,
    ) -> std::io::Result<WorkerHandle> {
        let (inbox, connections) = mpsc::unbounded_channel();
        let (finished, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                run_worker(connections, shared, exit);
                let _ = finished.send(());
            })?;
        Ok(WorkerHandle {
            inbox,
            load: Arc::new(AtomicUsize::new(0)),
            done,
        })
    }

    fn hand_over(&self, stream: std::net::TcpStream, slot: Slot) {
        self.load.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted {
            stream,
            slot,
            load: Arc::clone(&self.load),
        };
        // A worker that is gone drops the connection (and so frees its slot and load).
        let _ = self.inbox.send(accepted);
    }

    async fn finished(self) {
        drop(self.inbox);
        let _ = self.done.await;
    }
}

/// A worker thread: serves the connections handed to it until told to exit. Dropping its
/// runtime then cancels the connections still open after the drain deadline.
fn run_worker(
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
    mut exit: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start a worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let mut exiting = std::pin::pin!(async move {
            let _ = exit.wait_for(|exit| *exit).await;
        });
        loop {
            tokio::select! {
                biased;
                () = &mut exiting => break,
                accepted = connections.recv() => match accepted {
                    Some(accepted) => {
                        tokio::spawn(connection(accepted, Arc::clone(&shared)));
                    }
                    None => {
                        (&mut exiting).await;
                        break;
                    }
                },
            }
        }
    });
}

/// One client connection; holds its slot until it closes, and closes when the cap sheds it.
async fn connection(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted { stream, slot, load } = accepted;
    let _open = OpenConnection::new(Arc::clone(&shared.state), load);
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => slot.watch(stream, &LIMITS),
        Err(error) => {
            tracing::debug!(%error, "cannot register a connection");
            return;
        }
    };
    tokio::select! {
        () = serve_stream(stream, &shared) => {}
        () = slot.shed() => tracing::debug!("connection shed at the connection cap"),
    }
}

async fn serve_stream(stream: WatchedStream<TcpStream>, shared: &Shared) {
    let mut stop = shared.stop.subscribe();
    let Some(acceptor) = shared.tls.clone() else {
        return serve_http(TokioIo::new(stream), shared, stop).await;
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
        () = stopping(&mut stop) => return,
    };
    serve_http(TokioIo::new(stream), shared, stop).await;
}

async fn serve_http<I>(io: I, shared: &Shared, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = Arc::clone(&shared.state);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(state.handle(&request)))
    });
    let mut connection = std::pin::pin!(shared.http.serve_connection(io, service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(&mut stop) => {
            // Finishes the request in flight (if any) with `Connection: close`, then closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection closed with an error");
    }
}

/// Resolves once shutdown has begun (or the server is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A connection's presence: counted in `jwks_server_open_connections` and in its worker's load
/// until dropped.
struct OpenConnection {
    state: Arc<ServerState>,
    load: Arc<AtomicUsize>,
}

impl OpenConnection {
    fn new(state: Arc<ServerState>, load: Arc<AtomicUsize>) -> OpenConnection {
        state.metrics.connection_opened();
        OpenConnection { state, load }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.state.metrics.connection_closed();
    }
}
