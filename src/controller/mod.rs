//! The I/O shell: controllers that read what they need, call the pure core, apply the result
//! with server-side apply and report through status and events.

pub mod signing_key;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Error as KubeError};

/// The one field manager every write of the operator uses.
pub const FIELD_MANAGER: &str = "jwks-operator";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] KubeError),
    #[error("cannot encode the key ring: {0}")]
    Encode(#[from] crate::jose::Error),
    #[error("{0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// A write lost an optimistic-concurrency race: retry at once with fresh reads.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(KubeError::Api(status)) if status.code == 409)
    }

    /// How long to wait before retrying after this error.
    pub fn retry_after(&self) -> Duration {
        if self.is_conflict() {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(5)
        }
    }
}

/// Which namespaces the operator manages.
#[derive(Clone, Debug)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
}

impl Scope {
    pub fn api<K>(&self, client: Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::AllNamespaces => kube::Api::all(client),
            Scope::Namespace(namespace) => kube::Api::namespaced(client, namespace),
        }
    }
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    instance: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance,
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
    });
    signing_key::controller(client, &scope)
        .graceful_shutdown_on(shutdown)
        .run(signing_key::reconcile, signing_key::error_policy, context)
        .for_each(|result| async move {
            // Reconcile errors are logged by the error policy; what is left are watch errors.
            if let Err(error) = result {
                tracing::debug!(%error, "controller stream");
            }
        })
        .await;
}
