//! `jwks-operator run`: the operator process (the controllers, optionally behind a leader
//! lease, and its metrics and health endpoint) until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use jwks_operator::controller::leadership::{self, LeaseSettings};
use jwks_operator::controller::metrics::OperatorMetrics;
use jwks_operator::controller::{self, Scope, Settings, admin};
use tracing_subscriber::EnvFilter;

use super::CliError;
use super::cluster::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub struct RunOptions {
    /// Manage this namespace only; default: every namespace.
    pub namespace: Option<String>,
    /// Touch Secrets only in these namespaces; default: every managed one.
    pub secret_namespaces: Option<Vec<String>>,
    pub log_format: LogFormat,
    pub server_image: String,
    /// Serve /metrics, /healthz and /readyz here.
    pub metrics_listen: Option<SocketAddr>,
    /// Run the controllers only while holding the leader lease.
    pub leader_election: bool,
    /// The lease's namespace; default: the pod's (POD_NAMESPACE), else `default`.
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
}

pub fn run(options: RunOptions) -> Result<ExitCode, CliError> {
    limit_malloc_arenas();
    init_logging(options.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let metrics = Arc::new(OperatorMetrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = shutdown_signal().shared();
        if let Some(address) = options.metrics_listen {
            let listener = admin::bind(address)
                .await
                .map_err(|e| CliError::Failed(format!("cannot listen on {address}: {e}")))?;
            tokio::spawn(admin::serve(
                listener,
                metrics.clone(),
                ready.clone(),
                shutdown.clone(),
            ));
        }
        let cluster = Cluster::connect().await?;
        cluster.client.apiserver_version().await.map_err(|e| {
            CliError::Failed(format!(
                "cannot reach the Kubernetes API server at {}: {e}",
                cluster.url
            ))
        })?;
        ready.store(true, Ordering::Relaxed);
        let scope = match options.namespace {
            Some(namespace) => Scope::Namespace(namespace),
            None => Scope::AllNamespaces,
        };
        tracing::info!(server = cluster.url, scope = ?scope, "starting");
        let pod_name = std::env::var("POD_NAME").ok();
        let settings = Settings {
            scope,
            secret_namespaces: options
                .secret_namespaces
                .map(|names| names.into_iter().filter(|n| !n.is_empty()).collect()),
            instance: pod_name.clone(),
            server_image: options.server_image,
        };
        if options.leader_election {
            let lease = LeaseSettings {
                namespace: options
                    .lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "default".into()),
                identity: pod_name.unwrap_or_else(local_identity),
                duration: options.lease_duration,
            };
            leadership::run_as_leader(cluster.client, settings, lease, metrics, shutdown)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
        } else {
            metrics.set_leader(true);
            controller::run(cluster.client, settings, metrics, shutdown).await;
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// glibc gives threads that allocate at once arenas of their own, up to 8 per core, and memory
/// freed in one stays there: with reconciles hopping between the runtime's threads, 1,000 keys
/// took a fifth more resident memory with the default than with 2 (docs/benchmarks.md). Before
/// any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Outside a pod: this host and process, unique enough among the replicas of a test or a laptop.
fn local_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal only: a log file or collector gets plain text.
        .with_ansi(colour_allowed(std::io::stderr().is_terminal()));
    match format {
        LogFormat::Text => builder.init(),
        // The current span (a reconcile's object) stays as `span`; the list of all would repeat it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
    }
}

/// Colour codes only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour_allowed(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
