//! The JWKS server (`jwks-operator serve`): serves one publication's JWK Set and discovery
//! document from a mounted ConfigMap directory or the ConfigMap itself, over HTTP or HTTPS.
//!
//! Content is loaded, validated and turned into ready-to-send bytes and headers off the request
//! path, then swapped in atomically; a request only picks the current version and copies
//! reference-counted values out of it.

mod content;
pub mod limits;
mod metrics;
mod routes;
mod source;
mod tls;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use http::{Request, Response};
use kube::Client;

pub use routes::{HEALTHZ_PATH, METRICS_PATH, READYZ_PATH};
pub use tls::{TlsError, TlsFiles};
pub use transport::{
    DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD_BYTES,
    WRITE_TIMEOUT,
};

use content::ContentStore;
use metrics::ServerMetrics;
use routes::{Body, Route};
use source::ContentUpdater;

use crate::publication::JWKS_PATH;

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub source: Source,
    pub tls: Option<TlsFiles>,
    /// Worker threads (absent: [`WORKERS_PER_CORE`] per CPU, at most [`MAX_WORKERS`]).
    pub workers: Option<usize>,
}

/// Where the publication's ConfigMap data comes from.
pub enum Source {
    /// A directory where the ConfigMap is mounted (polled; follows the kubelet's `..data` swap).
    Dir(PathBuf),
    /// The ConfigMap itself, watched through the API.
    ConfigMap {
        client: Client,
        namespace: String,
        name: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start the server's worker threads: {0}")]
    Serve(std::io::Error),
}

/// Serves until `shutdown` resolves, then drains (see [`transport::serve_connections`]).
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = Arc::new(ServerState::default());
    let tls = options.tls.map(tls::load).transpose()?;
    let listener = listen(options.listen).map_err(|source| ServeError::Bind {
        address: options.listen,
        source,
    })?;
    let address = listener.local_addr().unwrap_or(options.listen);

    // Background tasks end with this set, when serving ends.
    let mut background = tokio::task::JoinSet::new();
    match options.source {
        Source::Dir(dir) => {
            let updater = ContentUpdater::new(Arc::clone(&state), dir.display().to_string());
            background.spawn(source::dir::watch(dir, updater));
        }
        Source::ConfigMap {
            client,
            namespace,
            name,
        } => {
            let origin = format!("configmap {namespace}/{name}");
            let updater = ContentUpdater::new(Arc::clone(&state), origin);
            background.spawn(source::configmap::watch(client, namespace, name, updater));
        }
    }
    let acceptor = tls.map(|(acceptor, reloader)| {
        background.spawn(reloader.run(Arc::clone(&state)));
        acceptor
    });

    let workers = options.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .saturating_mul(WORKERS_PER_CORE)
            .min(MAX_WORKERS)
    });
    tracing::info!(%address, tls = acceptor.is_some(), workers, "listening");
    let served = transport::serve_connections(listener, acceptor, state, workers, shutdown).await;
    background.shutdown().await;
    served.map_err(ServeError::Serve)
}

fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Worker threads per core the process may use (cgroup CPU limits included). A worker owns its
/// connections, so while the scheduler has it preempted they all wait; with two per core each
/// preemption stalls half as many, which lowered p99 more than the extra switches cost in
/// throughput (docs/benchmarks.md, "JWKS server against nginx").
const WORKERS_PER_CORE: usize = 2;

/// At most this many worker threads; a static JWKS saturates the network long before more cores
/// would help.
const MAX_WORKERS: usize = 8;

/// Connections the kernel queues until they are accepted (what tokio's `bind` uses).
const LISTEN_BACKLOG: u32 = 1024;

/// What every connection shares: the content served and the metrics.
#[derive(Debug, Default)]
struct ServerState {
    content: ContentStore,
    metrics: ServerMetrics,
}

impl ServerState {
    fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
        let content = self.content.current();
        let jwks_path = content
            .as_deref()
            .map_or(JWKS_PATH, |c| c.published.jwks_path.as_str());
        let route = Route::of(request.uri().path(), jwks_path);
        let response = routes::respond(
            route,
            request.method(),
            request.headers(),
            content.as_deref(),
            || self.metrics.encode(content.as_deref(), SystemTime::now()),
        );
        self.metrics.count_request(route, response.status());
        response
    }
}
