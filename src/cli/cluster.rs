//! What the cluster commands share: a client from the kubeconfig (as kubectl finds it), the
//! namespace to work in, and API failures turned into one line a user can act on.

use std::future::Future;

use jwks_operator::api::SigningKey;
use kube::api::PatchParams;
use kube::{Api, Client, Config};

use super::CliError;

/// The field manager of every write the CLI makes.
pub const FIELD_MANAGER: &str = "jwks-operator-cli";

/// A client for the kubeconfig's current context.
pub struct Cluster {
    pub client: Client,
    /// The context's namespace (`default` when it names none).
    pub default_namespace: String,
    /// The API server, for error messages.
    pub url: String,
}

impl Cluster {
    /// Loads the kubeconfig (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service account).
    pub async fn connect() -> Result<Cluster, CliError> {
        let config = Config::infer()
            .await
            .map_err(|e| CliError::Failed(format!("cannot load a kubeconfig: {}", chain(&e))))?;
        let default_namespace = config.default_namespace.clone();
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| {
            CliError::Failed(format!("cannot build a client for {url}: {}", chain(&e)))
        })?;
        Ok(Cluster {
            client,
            default_namespace,
            url,
        })
    }

    /// `-n NS` if given, else the context's namespace.
    pub fn namespace(&self, flag: Option<String>) -> String {
        flag.unwrap_or_else(|| self.default_namespace.clone())
    }

    pub fn signing_keys(&self, namespace: &str) -> Api<SigningKey> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// A failed API call on `what` (e.g. `signingkey ns/name`) as one line.
    pub fn error(&self, what: &str, error: kube::Error) -> CliError {
        let kube::Error::Api(status) = &error else {
            return CliError::Failed(format!(
                "cannot reach the Kubernetes API server at {}: {}",
                self.url,
                chain(&error)
            ));
        };
        let message = one_line(&status.message);
        CliError::Failed(match status.code {
            // A 404 that names no object means the resource type itself is unknown.
            404 if status.details.as_ref().is_some_and(|d| !d.name.is_empty()) => {
                format!("{what} not found")
            }
            404 => format!(
                "{what}: the API server at {} does not serve SigningKeys; are the jwks-operator CRDs installed? ({message})",
                self.url
            ),
            // The API server's refusal names the object, the verb and the user already.
            403 => message,
            401 => format!(
                "{what}: unauthorized at {}; check the kubeconfig's credentials ({message})",
                self.url
            ),
            _ => format!("{what}: {message}"),
        })
    }
}

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Runs a cluster command on a runtime of its own (the offline commands need none).
pub fn block_on<T>(command: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the Kubernetes client: {e}")))?
        .block_on(command)
}

/// An error and its causes on one line, each cause once (client errors repeat themselves).
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
