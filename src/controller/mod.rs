//! The I/O shell: controllers that read what they need, call the pure core, apply the result
//! with server-side apply and report through status and events.

pub mod admin;
mod apply;
mod cache;
pub mod clock;
pub mod conditions;
mod error;
mod events;
pub mod leadership;
pub mod metrics;
pub mod publication;
pub mod signing_key;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::{JwksPublication, SigningKey};

pub use error::{During, Error};

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
    /// Which namespaces the operator manages (copies in other namespaces need all of them).
    pub scope: Scope,
    /// Every SigningKey in scope, without managedFields: the publication controller's cache.
    pub signing_keys: cache::Cache<SigningKey>,
    /// Every JwksPublication in scope, without managedFields: the SigningKey controller's cache.
    pub publications: cache::Cache<JwksPublication>,
    /// When each publication last wrote its ConfigMap: additions wait a little to be batched.
    pub publication_writes: publication::WritePacing,
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
    let (keys, publications_cache) = signing_key::controller(
        client.clone(),
        &settings.scope,
        settings.secret_namespaces.as_ref(),
    );
    let (publications, signing_keys) = publication::controller(client.clone(), &settings.scope);
    let context = Arc::new(Context {
        recorder: events::EventRecorder::new(
            client.clone(),
            FIELD_MANAGER.into(),
            settings.instance,
        ),
        clock: clock::ApiClock::new(client.clone()),
        client,
        server_image: settings.server_image,
        metrics,
        secret_namespaces: settings.secret_namespaces,
        scope: settings.scope,
        signing_keys: cache::Cache::new(signing_keys, "SigningKeys"),
        publications: cache::Cache::new(publications_cache, "JwksPublications"),
        publication_writes: publication::WritePacing::new(publication::WRITE_INTERVAL),
    });
    let shutdown = shutdown.shared();
    context
        .metrics
        .track(existing(keys.store(), publications.store()));
    let signing_keys = keys
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |key, context| {
                observed(
                    signing_key::CONTROLLER,
                    key,
                    context,
                    signing_key::reconcile,
                )
            },
            |key, error, context| error_policy(signing_key::CONTROLLER, &*key, error, &context),
            context.clone(),
        )
        .for_each(log_stream_error);
    let publications = publications
        .graceful_shutdown_on(shutdown)
        .run(
            |publication, context| {
                observed(
                    publication::CONTROLLER,
                    publication,
                    context,
                    publication::reconcile,
                )
            },
            |publication, error, context| {
                error_policy(publication::CONTROLLER, &*publication, error, &context)
            },
            context,
        )
        .for_each(log_stream_error);
    futures::join!(signing_keys, publications);
}

/// Whether the objects behind metric labels still exist, read from the controllers' caches.
fn existing(keys: Store<SigningKey>, publications: Store<JwksPublication>) -> metrics::Existing {
    fn lookup<K>(store: Store<K>) -> Box<dyn Fn(&metrics::ObjectLabels) -> bool + Send + Sync>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        Box::new(move |labels| {
            store
                .get(&ObjectRef::new(&labels.name).within(&labels.namespace))
                .is_some()
        })
    }
    metrics::Existing {
        keys: lookup(keys),
        publications: lookup(publications),
    }
}

/// Runs one reconcile in a span naming the object (every log line of it carries them) and
/// counts it and its duration.
async fn observed<K, F, R>(
    controller: &'static str,
    object: Arc<K>,
    context: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource,
    F: FnOnce(Arc<K>, Arc<Context>) -> R,
    R: Future<Output = Result<Action, Error>>,
{
    let span = reconcile_span(controller, &*object);
    let metrics = context.metrics.clone();
    metrics.reconciled(controller);
    let started = Instant::now();
    let result = reconcile(object, context).instrument(span).await;
    metrics.observe_duration(controller, started.elapsed());
    result
}

/// Counts a failed reconcile by its error's category, logs it (a lost write race quietly) and
/// retries after the error's delay.
fn error_policy<K: Resource>(
    controller: &'static str,
    object: &K,
    error: &Error,
    context: &Context,
) -> Action {
    context
        .metrics
        .reconcile_failed(controller, error.category());
    let _span = reconcile_span(controller, object).entered();
    if error.is_conflict() {
        // Another writer (a second operator, a user) changed the object since it was read.
        tracing::debug!(%error, "write conflict; retrying with fresh reads");
    } else {
        tracing::warn!(%error, category = error.category(), "reconcile failed");
    }
    Action::requeue(error.retry_after())
}

/// The span of one object's reconcile: every log line in it carries these fields (in JSON logs
/// under `span`). The object's name is `object`: a span's own name is already `name` there.
fn reconcile_span<K: Resource>(controller: &'static str, object: &K) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        controller,
        namespace = object.namespace(),
        object = object.name_any(),
        generation = object.meta().generation,
    )
}

/// Reconcile errors are logged by the error policies; what reaches here are watch errors.
async fn log_stream_error<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "controller stream");
    }
}
