//! The I/O shell: controllers that read what they need, call the pure core, apply the result
//! with server-side apply and report through status and events.

pub mod clock;
mod events;
pub mod leadership;
pub mod metrics;
pub mod publication;
pub mod signing_key;
pub mod telemetry;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Client, Error as KubeError};

/// The one field manager every write of the operator uses.
pub const FIELD_MANAGER: &str = "jwks-operator";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: events::EventRecorder,
    /// The image the JWKS server Deployments run (this operator's own image).
    pub server_image: String,
    pub metrics: Arc<metrics::OperatorMetrics>,
    pub clock: clock::ApiClock,
    /// The only namespaces whose Secrets the operator may touch (absent: every managed one).
    pub secret_namespaces: Option<BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] KubeError),
    #[error("cannot encode the key ring: {0}")]
    Encode(#[from] crate::jose::Error),
    #[error("{0} has no namespace")]
    NotNamespaced(String),
    #[error(transparent)]
    Clock(#[from] clock::ClockError),
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

/// A status condition of this generation; its `lastTransitionTime` is kept from `previous` when
/// the status did not change, as Kubernetes conventions ask.
pub fn condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
    (type_, status, reason, message): (&str, &str, &str, String),
) -> Condition {
    let transition = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: bounded(message, MAX_MESSAGE_BYTES),
        observed_generation: generation,
        last_transition_time: transition,
    }
}

/// Condition messages and event notes are cut at this many bytes: they are read by far more
/// people than the objects they describe, and an event note may not exceed 1 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// `text`, cut at a character boundary to at most `max` bytes (with `…` when cut).
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
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

/// How the operator process runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scope: Scope,
    /// Touch Secrets only in these namespaces (absent: every namespace of `scope`).
    pub secret_namespaces: Option<BTreeSet<String>>,
    /// This replica's name (the pod name), reported with events.
    pub instance: Option<String>,
    /// The image the JWKS server Deployments run.
    pub server_image: String,
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<metrics::OperatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let context = Arc::new(Context {
        recorder: events::EventRecorder::new(
            client.clone(),
            FIELD_MANAGER.into(),
            settings.instance,
        ),
        clock: clock::ApiClock::new(client.clone()),
        client: client.clone(),
        server_image: settings.server_image,
        metrics,
        secret_namespaces: settings.secret_namespaces.clone(),
    });
    let shutdown = shutdown.shared();
    let signing_keys = signing_key::controller(
        client.clone(),
        &settings.scope,
        settings.secret_namespaces.as_ref(),
    )
    .graceful_shutdown_on(shutdown.clone())
    .run(
        signing_key::reconcile,
        signing_key::error_policy,
        context.clone(),
    )
    .for_each(log_stream_error);
    let publications = publication::controller(client, &settings.scope)
        .graceful_shutdown_on(shutdown)
        .run(publication::reconcile, publication::error_policy, context)
        .for_each(log_stream_error);
    futures::join!(signing_keys, publications);
}

/// Reconcile errors are logged by the error policies; what reaches here are watch errors.
async fn log_stream_error<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "controller stream");
    }
}
