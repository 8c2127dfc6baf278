//! The JwksPublication controller: read (the publication, the SigningKeys of its namespace) →
//! assemble (pure, from their status only: this path never reads a Secret) → apply (ConfigMap,
//! then the server's Deployment and Service) → report (status, events).

mod config_map;
mod copies;
mod decide;
#[cfg(test)]
mod fixtures;
mod naming;
mod pacing;
mod server;
mod status;
mod write_copies;

pub use config_map::CONFIG_MAP_DATA_LIMIT;
pub use naming::object_name;
pub use pacing::{WRITE_INTERVAL, WritePacing};

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Event;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::api::conditions::PublicationReason;
use crate::api::{JwksPublication, JwksPublicationStatus, MANAGED_BY_LABEL, MANAGER, SigningKey};
use crate::lifecycle::selects;
use crate::publication::{Assembled, assemble, smallest_pre_publish};

use super::apply::{apply_if_unchanged, describe, write_status};
use super::cache::{self, Cache};
use super::metrics::ObjectLabels;
use super::{Context, During, Error, Scope};
use config_map::{ConfigMapAction, Publishing, kids_in, plan_config_map};
use copies::{Copying, publication_of};
use decide::{ServerPlan, next_action, plan_server, published_event, warnings};
use naming::{check_name, owned_selector, unwanted};
use server::{Server, build_deployment, build_service, server_conflict};
use status::{Facts, build_status, spec_problem, warning_events};
use write_copies::{copy, hold_copies, release_copies};

/// A condition reason with its message: why something could not be done as the spec asks.
type Problem = (PublicationReason, String);

pub const CONTROLLER: &str = "jwkspublication";

/// Publications reconciled at once. Each holds its selected keys and documents; a few keep the
/// apiserver busy, and the rest would only add memory (a key change wakes every publication of
/// its namespace).
const CONCURRENCY: u16 = 4;

/// Publications, the objects they own, their copies, every SigningKey (a key's status is the
/// input) and, when copies can be made, the namespaces (their labels choose the copies).
/// Returns the controller and its cache of SigningKeys, which [`reconcile`] reads its keys from.
pub fn controller(
    client: kube::Client,
    scope: &Scope,
) -> (Controller<JwksPublication>, Store<SigningKey>) {
    let publications: Api<JwksPublication> = scope.api(client.clone());
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(publications, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let store = controller.store();
    let in_namespace = store.clone();
    let (keys, key_changes) = cache::watch(scope.api::<SigningKey>(client.clone()));
    let controller = controller
        .watches(
            scope.api::<ConfigMap>(client.clone()),
            owned.clone(),
            |config_map| publication_of(&config_map),
        )
        .owns(scope.api::<Deployment>(client.clone()), owned.clone())
        .owns(scope.api::<Service>(client.clone()), owned)
        .watches_stream(key_changes, move |key| {
            // Every publication of the namespace: one that selected this key before a relabel
            // must drop it as surely as a new one must add it.
            in_namespace
                .state()
                .into_iter()
                .filter(|p| p.namespace() == key.namespace())
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        });
    let controller = match scope {
        Scope::Namespace(_) => controller,
        Scope::AllNamespaces => controller.watches(
            Api::<Namespace>::all(client),
            watcher::Config::default(),
            move |_| {
                store
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.copies.is_some())
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        ),
    };
    (controller, keys)
}

/// Reads the publication and its namespace's SigningKeys, publishes the ConfigMap and its
/// copies, runs the server, removes what is no longer wanted, and reports status and events.
pub async fn reconcile(
    publication: Arc<JwksPublication>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = publication
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(publication.name_any()))?;
    let labels = ObjectLabels {
        namespace: namespace.clone(),
        name: publication.name_any(),
    };
    let client = &context.client;
    let Some(publication) = read_publication(client, &namespace, &publication.name_any()).await?
    else {
        context.metrics.forget_publication(&labels);
        return Ok(Action::await_change());
    };
    if publication.meta().deletion_timestamp.is_some() {
        release_copies(client, &publication).await?;
        return Ok(Action::await_change());
    }
    let publication = hold_copies(context.as_ref(), publication).await?;
    let keys = read_keys(&context.signing_keys, &publication).await?;
    let assembled = assemble(&publication, &keys);
    let uid = publication.uid().unwrap_or_default();
    if pacing::may_wait(&publication, &assembled.kids)
        && let Some(wait) = context.publication_writes.wait(&uid, Instant::now())
    {
        return Ok(Action::requeue(wait));
    }
    let warnings = warnings(
        &assembled,
        smallest_pre_publish(&publication, &keys),
        publication.spec.server.enabled,
    );

    let publishing = publish(client, &namespace, &publication, &assembled).await?;
    if publishing.event.is_some() {
        context.publication_writes.wrote(&uid, Instant::now());
    }
    let copying = copy(&context, &publication, &assembled, &publishing).await?;
    let server = run_server(&context, &namespace, &publication, &publishing).await?;
    let keep_server = matches!(server, Server::Running { .. });
    remove_unwanted(client, &namespace, &publication, keep_server).await?;

    let status = build_status(&Facts {
        publication: &publication,
        served: &publishing.served,
        added: &publishing.added,
        etag: publishing.etag.clone(),
        publish_problem: publishing.problem.clone(),
        spec_problem: spec_problem(&publication),
        warnings: &warnings,
        sources: assembled.sources.len(),
        server: server.clone(),
        copying: &copying,
        now: Timestamp::now(),
    });
    report(
        &context,
        &namespace,
        &publication,
        &status,
        publishing.event,
    )
    .await?;
    if copying == Copying::NotAsked {
        release_copies(client, &publication).await?;
    }
    context
        .metrics
        .observe_publication(labels, status.keys.len());
    Ok(next_action(
        publishing.problem.as_ref(),
        &server,
        copying.needs_retry(),
    ))
}

/// The publication as it is now (the trigger may be stale), absent once deleted.
async fn read_publication(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<JwksPublication>, Error> {
    let publications: Api<JwksPublication> = Api::namespaced(client.clone(), namespace);
    publications
        .get_opt(name)
        .await
        .during("read", format!("JwksPublication {namespace}/{name}"))
}

/// The SigningKeys `publication` selects (their status is what is published), from the
/// controller's cache. Waits for its first full list: a reconcile at start-up must not publish
/// a set with keys missing.
async fn read_keys(
    keys: &Cache<SigningKey>,
    publication: &JwksPublication,
) -> Result<Vec<SigningKey>, Error> {
    let keys = keys.filled().await?;
    let selected = keys.state_filter(|key| selects(publication, key));
    Ok(selected.iter().map(|key| SigningKey::clone(key)).collect())
}

/// Brings the ConfigMap up to date unless its name is invalid, it is someone else's, or the
/// documents do not fit.
async fn publish(
    client: &kube::Client,
    namespace: &str,
    publication: &JwksPublication,
    assembled: &Assembled,
) -> Result<Publishing, Error> {
    if let Some(problem) = check_name(publication).filter(|p| p.config_map) {
        return Ok(Publishing::refused(
            publication,
            None,
            assembled,
            problem.problem(),
        ));
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = object_name(publication);
    let existing = config_maps
        .get_opt(&name)
        .await
        .during("read", format!("ConfigMap {namespace}/{name}"))?;
    match plan_config_map(publication, existing.as_ref(), &assembled.published) {
        ConfigMapAction::Refuse(reason, message) => Ok(Publishing::refused(
            publication,
            existing.as_ref(),
            assembled,
            (reason, message),
        )),
        ConfigMapAction::Unchanged => Ok(Publishing::up_to_date(
            publication,
            assembled,
            None,
            Vec::new(),
        )),
        ConfigMapAction::Write(desired) => {
            write_config_map(&config_maps, existing.as_ref(), *desired).await?;
            info!(keys = assembled.kids.len(), "JWKS published");
            let before = existing.as_ref().map(kids_in).unwrap_or_default();
            let event = published_event(&before, &assembled.kids);
            let added = assembled
                .kids
                .iter()
                .filter(|kid| !before.contains(kid))
                .cloned()
                .collect();
            Ok(Publishing::up_to_date(
                publication,
                assembled,
                Some(event),
                added,
            ))
        }
    }
}

/// Writes the publication's ConfigMap on condition that it is still as `observed` was read
/// (see [`apply_if_unchanged`]): a writer that read an older ConfigMap gets 409 Conflict and
/// re-plans, so the ConfigMap never goes back to older content.
pub async fn write_config_map(
    config_maps: &Api<ConfigMap>,
    observed: Option<&ConfigMap>,
    desired: ConfigMap,
) -> Result<ConfigMap, Error> {
    apply_if_unchanged(config_maps, observed, desired).await
}

/// Runs the server when [`plan_server`] lets it; what became of it.
async fn run_server(
    context: &Context,
    namespace: &str,
    publication: &JwksPublication,
    publishing: &Publishing,
) -> Result<Server, Error> {
    let name_problem = check_name(publication);
    match plan_server(
        publication,
        name_problem.as_ref(),
        publishing.problem.as_ref(),
        publishing.ours,
    ) {
        ServerPlan::Skip(server) => Ok(server),
        ServerPlan::Apply => {
            apply_server(
                &context.client,
                namespace,
                publication,
                &context.server_image,
            )
            .await
        }
    }
}

/// Applies the server Deployment and Service, unless an object of that name is someone else's;
/// returns what became of the server.
async fn apply_server(
    client: &kube::Client,
    namespace: &str,
    publication: &JwksPublication,
    image: &str,
) -> Result<Server, Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let name = object_name(publication);
    let deployment = deployments
        .get_opt(&name)
        .await
        .during("read", format!("Deployment {namespace}/{name}"))?;
    let service = services
        .get_opt(&name)
        .await
        .during("read", format!("Service {namespace}/{name}"))?;
    if let Some(message) = server_conflict(publication, deployment.as_ref(), service.as_ref()) {
        return Ok(Server::NotRun(PublicationReason::ServerConflict, message));
    }
    let desired = build_deployment(publication, image);
    let deployment = apply_if_unchanged(&deployments, deployment.as_ref(), desired).await?;
    apply_if_unchanged(&services, service.as_ref(), build_service(publication)).await?;
    let available = deployment
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Ok(Server::Running {
        available,
        desired: publication.spec.server.replicas,
    })
}

/// Writes the status, then the events: the JwksUpdated of a write and a Warning for each new
/// problem. An event that cannot be published is logged, never a failed reconcile.
async fn report(
    context: &Context,
    namespace: &str,
    publication: &JwksPublication,
    status: &JwksPublicationStatus,
    published: Option<Event>,
) -> Result<(), Error> {
    let publications: Api<JwksPublication> = Api::namespaced(context.client.clone(), namespace);
    write_status(&publications, publication, status).await?;
    let previous = publication
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let events = published
        .into_iter()
        .chain(warning_events(previous, &status.conditions));
    let reference = publication.object_ref(&());
    for event in events {
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(%error, "cannot publish event");
        }
    }
    Ok(())
}

/// Deletes what this publication owns and no longer wants: ConfigMaps not named after it (a
/// former `configMapName`), and its Deployments and Services unless `keep_server` and so named.
/// Found by label, proven by the controller owner reference, and deleted on condition of their
/// UID, so nothing else is ever removed.
async fn remove_unwanted(
    client: &kube::Client,
    namespace: &str,
    publication: &JwksPublication,
    keep_server: bool,
) -> Result<(), Error> {
    let name = object_name(publication);
    let server = keep_server.then_some(name.as_str());
    let owned = ListParams::default().labels(&owned_selector(publication));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    remove(&config_maps, publication, &owned, Some(&name)).await?;
    remove(&deployments, publication, &owned, server).await?;
    remove(&services, publication, &owned, server).await?;
    Ok(())
}

async fn remove<K>(
    api: &Api<K>,
    publication: &JwksPublication,
    owned: &ListParams,
    keep: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let objects = api
        .list_metadata(owned)
        .await
        .during("list", format!("the {kind}s of {}", describe(publication)))?
        .items;
    for (name, uid) in unwanted(publication, &objects, keep) {
        delete_exactly(api, &name, uid).await?;
    }
    Ok(())
}

/// Deletes the object `name` if it is still the one with `uid`.
pub(super) async fn delete_exactly<K>(api: &Api<K>, name: &str, uid: String) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(
                kind = kind.as_ref(),
                object = name,
                "removed an object the publication no longer uses"
            );
            Ok(())
        }
        // Gone already, or the name now belongs to another object: nothing of ours to delete.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error).during("delete", format!("{kind} {name}")),
    }
}
