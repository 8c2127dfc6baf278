//! `jwks-operator run`: the operator process (the controllers) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use jwks_operator::controller::{self, Scope, Settings};
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
    pub log_format: LogFormat,
    pub server_image: String,
}

pub fn run(options: RunOptions) -> Result<ExitCode, CliError> {
    init_logging(options.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let cluster = Cluster::connect().await?;
        let scope = match options.namespace {
            Some(namespace) => Scope::Namespace(namespace),
            None => Scope::AllNamespaces,
        };
        tracing::info!(server = cluster.url, scope = ?scope, "starting");
        let settings = Settings {
            scope,
            instance: std::env::var("POD_NAME").ok(),
            server_image: options.server_image,
        };
        controller::run(cluster.client, settings, shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
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
