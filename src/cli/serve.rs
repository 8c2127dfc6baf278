//! `jwks-operator serve`: the JWKS server until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use jwks_operator::server::{self, Source, TlsFiles};

use super::CliError;
use super::cluster::Cluster;
use super::run::{LogFormat, init_logging, shutdown_signal};

/// Where the content comes from, as given on the command line.
pub enum ContentSource {
    Dir(PathBuf),
    ConfigMap { namespace: String, name: String },
}

impl ContentSource {
    /// From `--dir` and `--configmap`; exactly one must be given.
    pub fn from_flags(
        dir: Option<PathBuf>,
        configmap: Option<(String, String)>,
    ) -> Result<ContentSource, CliError> {
        match (dir, configmap) {
            (Some(dir), None) => Ok(ContentSource::Dir(dir)),
            (None, Some((namespace, name))) => Ok(ContentSource::ConfigMap { namespace, name }),
            _ => Err(CliError::Usage(
                "give exactly one of --dir and --configmap".into(),
            )),
        }
    }
}

pub struct ServeOptions {
    pub source: Result<ContentSource, CliError>,
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    /// How long to keep accepting after SIGTERM (see `serve --shutdown-delay-seconds`).
    pub shutdown_delay: std::time::Duration,
    /// Worker threads (absent: the server's default).
    pub workers: Option<usize>,
}

pub fn run(options: ServeOptions) -> Result<ExitCode, CliError> {
    let source = options.source?;
    init_logging(options.log_format);
    // This runtime runs the signal handler and the content and certificate reloads; the server
    // starts its own worker threads for connections.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let source = match source {
            ContentSource::Dir(dir) => Source::Dir(dir),
            ContentSource::ConfigMap { namespace, name } => {
                let cluster = Cluster::connect().await?;
                tracing::info!(server = cluster.url, %namespace, %name, "watching the ConfigMap");
                Source::ConfigMap {
                    client: cluster.client,
                    namespace,
                    name,
                }
            }
        };
        let delay = options.shutdown_delay;
        let options = server::ServeOptions {
            listen: options.listen,
            source,
            tls: options.tls,
            workers: options.workers,
        };
        let shutdown = async move {
            shutdown_signal().await;
            if !delay.is_zero() {
                tracing::info!(
                    seconds = delay.as_secs(),
                    "stopping: still accepting for the shutdown delay"
                );
                tokio::time::sleep(delay).await;
            }
        };
        server::serve(options, shutdown)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Parses `--configmap NAMESPACE/NAME`.
pub fn parse_configmap(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {value:?}")),
    }
}
