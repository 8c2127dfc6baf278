//! The JwksPublication controller: read (the publication, the SigningKeys of its namespace) →
//! assemble (pure, from their status only: this path never reads a Secret) → apply (ConfigMap,
//! then the server's Deployment and Service) → report (status, events).

mod build;

pub use build::{CONFIG_MAP_DATA_LIMIT, object_name};

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::api::{JwksPublication, MANAGED_BY_LABEL, MANAGER, SigningKey};
use crate::publication::{assemble, smallest_pre_publish};

use super::apply::{apply_if_unchanged, write_status};
use super::metrics::ObjectLabels;
use super::{Context, Error, Scope};
use build::{
    ConfigMapAction, Facts, Server, build_deployment, build_service, build_status, check_name,
    controlled_by, kids_in, owned_selector, plan_config_map, served, server_conflict, spec_problem,
    unwanted, warning_events,
};

/// Publications, the objects they own, and every SigningKey (a key's status is the input).
pub fn controller(client: kube::Client, scope: &Scope) -> Controller<JwksPublication> {
    let publications: Api<JwksPublication> = scope.api(client.clone());
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(publications, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(scope.api::<ConfigMap>(client.clone()), owned.clone())
        .owns(scope.api::<Deployment>(client.clone()), owned.clone())
        .owns(scope.api::<Service>(client.clone()), owned)
        .watches(
            scope.api::<SigningKey>(client),
            watcher::Config::default(),
            move |key| {
                // Every publication of the namespace: one that selected this key before a relabel
                // must drop it as surely as a new one must add it.
                store
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == key.namespace())
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
}

pub async fn reconcile(
    publication: Arc<JwksPublication>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = publication
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(publication.name_any()))?;
    let client = &context.client;
    let labels = ObjectLabels {
        namespace: namespace.clone(),
        name: publication.name_any(),
    };
    let publications: Api<JwksPublication> = Api::namespaced(client.clone(), &namespace);
    let Some(publication) = publications.get_opt(&publication.name_any()).await? else {
        context.metrics.forget(&labels);
        return Ok(Action::await_change());
    };
    if publication.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &namespace);
    let keys = keys.list(&ListParams::default()).await?.items;
    let assembled = assemble(&publication, &keys);
    let name = object_name(&publication);
    let name_problem = check_name(&publication);

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut warnings = Vec::new();
    let mut events = Vec::new();
    let mut publish_problem = None;
    let mut existing = None;
    match &name_problem {
        Some(problem) if problem.config_map => {
            publish_problem = Some(("InvalidName", problem.message.clone()));
        }
        _ => {
            existing = config_maps.get_opt(&name).await?;
            match plan_config_map(&publication, existing.as_ref(), &assembled.published) {
                ConfigMapAction::Write(desired) => {
                    write_config_map(&config_maps, existing.as_ref(), *desired).await?;
                    let before = existing.as_ref().map(kids_in).unwrap_or_default();
                    events.push(published_event(&before, &assembled.kids));
                    info!(
                        namespace,
                        name = publication.name_any(),
                        keys = assembled.kids.len(),
                        "JWKS published"
                    );
                }
                ConfigMapAction::Unchanged => {}
                ConfigMapAction::Refuse(reason, message) => {
                    publish_problem = Some((reason, message));
                }
            }
        }
    }
    let config_map_ours = publish_problem.is_none()
        || existing
            .as_ref()
            .is_some_and(|cm| controlled_by(cm, &publication));
    let (served, etag) = served(
        &publication,
        publish_problem.is_none(),
        existing.as_ref(),
        &assembled.published,
        &assembled.kids,
    );
    if assembled.published.jwks.len() > NIMBUS_LIMIT {
        warnings.push(format!(
            "jwks.json is {} bytes: some verifiers (Nimbus JOSE+JWT) refuse sets over {NIMBUS_LIMIT}",
            assembled.published.jwks.len()
        ));
    }
    let max_age = std::time::Duration::from_secs(assembled.published.max_age_seconds);
    if let Some(pre_publish) = smallest_pre_publish(&publication, &keys)
        && max_age > pre_publish
    {
        warnings.push(format!(
            "cacheMaxAge {}s exceeds the smallest prePublish of the selected keys ({}s): a verifier may cache a JWKS without a key that already signs",
            max_age.as_secs(),
            pre_publish.as_secs()
        ));
    }
    if !assembled.skipped.is_empty() {
        warnings.push(format!(
            "skipped invalid public JWKs: {}",
            assembled.skipped.join(", ")
        ));
    }

    let server = match (&name_problem, &publish_problem) {
        _ if !publication.spec.server.enabled => Server::Disabled,
        (Some(problem), _) => Server::NotRun("InvalidName", problem.message.clone()),
        // Never a server on a ConfigMap that is not this publication's (G7).
        (None, Some((reason, message))) if !config_map_ours => {
            Server::NotRun(reason, message.clone())
        }
        _ => apply_server(client, &namespace, &publication, &context.server_image).await?,
    };
    let keep_server = matches!(server, Server::Running { .. }).then_some(name.as_str());
    remove_unwanted(client, &namespace, &publication, &name, keep_server).await?;

    let status = build_status(&Facts {
        publication: &publication,
        served: &served,
        etag,
        publish_problem: publish_problem.clone(),
        spec_problem: spec_problem(&publication),
        warnings: &warnings,
        sources: assembled.sources.len(),
        server: server.clone(),
        now: Timestamp::now(),
    });
    write_status(&publications, &publication, &status).await?;
    context
        .metrics
        .observe_publication(labels, status.keys.len());

    let previous = publication
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    events.extend(warning_events(previous, &status.conditions));
    let reference = publication.object_ref(&());
    for event in events {
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(namespace, name = publication.name_any(), %error, "cannot publish event");
        }
    }
    let conflict = matches!(publish_problem, Some(("ConfigMapConflict", _)))
        || matches!(server, Server::NotRun("ServerConflict", _));
    Ok(if conflict {
        // The conflicting object is not ours, so not watched: look again.
        Action::requeue(PROBLEM_RETRY)
    } else {
        // Nothing else changes with time alone: every input is watched.
        Action::await_change()
    })
}

pub const CONTROLLER: &str = "jwkspublication";

const PROBLEM_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The limit some verifiers put on a JWK Set (jose-interop.md).
const NIMBUS_LIMIT: usize = 51_200;

fn published_event(before: &[String], after: &std::collections::BTreeSet<String>) -> Event {
    let added: Vec<&str> = after
        .iter()
        .filter(|k| !before.contains(k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = before
        .iter()
        .filter(|k| !after.contains(*k))
        .map(String::as_str)
        .collect();
    let list = |kids: &[&str]| {
        if kids.is_empty() {
            "none".to_owned()
        } else {
            kids.join(", ")
        }
    };
    Event {
        type_: EventType::Normal,
        reason: "JwksUpdated".into(),
        note: Some(format!(
            "{} key(s) published; added: {}; removed: {}",
            after.len(),
            list(&added),
            list(&removed)
        )),
        action: "Publish".into(),
        secondary: None,
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
    let deployment = deployments.get_opt(&name).await?;
    let service = services.get_opt(&name).await?;
    if let Some(message) = server_conflict(publication, deployment.as_ref(), service.as_ref()) {
        return Ok(Server::NotRun("ServerConflict", message));
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

/// Deletes what this publication owns and no longer wants: ConfigMaps not named `config_map`
/// (a former `configMapName`), Deployments and Services not named `server` (all of them while
/// the server is not to run). Found by label, proven by the controller owner reference, and
/// deleted on condition of their UID, so nothing else is ever removed.
async fn remove_unwanted(
    client: &kube::Client,
    namespace: &str,
    publication: &JwksPublication,
    config_map: &str,
    server: Option<&str>,
) -> Result<(), Error> {
    let owned = ListParams::default().labels(&owned_selector(publication));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    remove(&config_maps, publication, &owned, Some(config_map)).await?;
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
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let objects = api.list_metadata(owned).await?.items;
    for (name, uid) in unwanted(publication, &objects, keep) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&name, &params).await {
            Ok(_) => info!(
                namespace = publication.namespace(),
                name = publication.name_any(),
                kind = K::kind(&K::DynamicType::default()).as_ref(),
                object = name,
                "removed an object the publication no longer uses"
            ),
            // Gone already, or the name now belongs to another object: nothing of ours to delete.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
