//! The JwksPublication controller: read (the publication, the SigningKeys of its namespace) →
//! assemble (pure, from their status only: this path never reads a Secret) → apply (ConfigMap,
//! then the server's Deployment and Service) → report (status, events).

mod build;

pub use build::{CONFIG_MAP_DATA_LIMIT, object_name};

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{JwksPublication, SigningKey};
use crate::publication::{JWKS_KEY, assemble, smallest_pre_publish, strong_etag};

use super::metrics::ObjectLabels;
use super::{Context, Error, FIELD_MANAGER, Scope};
use build::{
    ConfigMapAction, Facts, MANAGED_BY_LABEL, MANAGER, build_deployment, build_service,
    build_status, controlled_by, plan_config_map,
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

pub fn error_policy(
    publication: Arc<JwksPublication>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    context.metrics.reconcile_failed(CONTROLLER);
    if !error.is_conflict() {
        warn!(namespace = publication.namespace(), name = publication.name_any(), %error, "reconcile failed");
    }
    Action::requeue(error.retry_after())
}

pub async fn reconcile(
    publication: Arc<JwksPublication>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = publication
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(publication.name_any()))?;
    let client = &context.client;
    context.metrics.reconciled(CONTROLLER);
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

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let existing = config_maps.get_opt(&name).await?;
    let mut warnings = Vec::new();
    let mut events = Vec::new();
    let mut publish_problem = None;
    match plan_config_map(&publication, existing.as_ref(), &assembled.published) {
        ConfigMapAction::Write(desired) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            config_maps
                .patch(&name, &params, &Patch::Apply(&desired))
                .await?;
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
        ConfigMapAction::Refuse(reason, message) => publish_problem = Some((reason, message)),
    }
    let served: Vec<String> = if publish_problem.is_some() {
        existing.as_ref().map(kids_in).unwrap_or_default()
    } else {
        assembled.kids.iter().cloned().collect()
    };
    let etag = if publish_problem.is_some() {
        existing.as_ref().and_then(|cm| {
            cm.data
                .as_ref()?
                .get(JWKS_KEY)
                .map(|j| strong_etag(j.as_bytes()))
        })
    } else {
        Some(strong_etag(assembled.published.jwks.as_bytes()))
    };
    if assembled.published.jwks.len() > NIMBUS_LIMIT {
        warnings.push(format!(
            "jwks.json is {} bytes: some verifiers (Nimbus JOSE+JWT) refuse sets over {NIMBUS_LIMIT}",
            assembled.published.jwks.len()
        ));
    }
    let max_age = publication
        .spec
        .cache_max_age
        .parse_at_most(crate::api::JwksPublicationSpec::MAX_CACHE_MAX_AGE)
        .unwrap_or(crate::api::JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE);
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

    let server = apply_server(client, &namespace, &publication, &context.server_image).await?;
    let status = build_status(&Facts {
        publication: &publication,
        served: &served,
        etag,
        publish_problem: publish_problem.clone(),
        warnings: &warnings,
        sources: assembled.sources.len(),
        server,
        now: Timestamp::now(),
    });
    write_status(&publications, &publication, &status).await?;
    context
        .metrics
        .observe_publication(labels, status.keys.len());

    let previous_warnings = publication
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Published"))
        .map(|c| c.message.clone());
    let published_condition = status.conditions.iter().find(|c| c.type_ == "Published");
    if let Some(condition) = published_condition
        && condition.reason != "UpToDate"
        && previous_warnings.as_ref() != Some(&condition.message)
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: condition.reason.clone(),
            note: Some(condition.message.clone()),
            action: "Publish".into(),
            secondary: None,
        });
    }
    let reference = publication.object_ref(&());
    for event in events {
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(namespace, name = publication.name_any(), %error, "cannot publish event");
        }
    }
    Ok(match publish_problem {
        // A conflicting ConfigMap is not ours, so not watched: look again.
        Some(_) => Action::requeue(PROBLEM_RETRY),
        // Nothing else changes with time alone: every input is watched.
        None => Action::await_change(),
    })
}

const CONTROLLER: &str = "jwkspublication";

const PROBLEM_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The limit some verifiers put on a JWK Set (jose-interop.md).
const NIMBUS_LIMIT: usize = 51_200;

fn kids_in(config_map: &ConfigMap) -> Vec<String> {
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(JWKS_KEY))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|set| {
            set["keys"].as_array().map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

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

/// Applies (or, when disabled, removes) the server Deployment and Service; returns the
/// available and desired replicas while enabled.
async fn apply_server(
    client: &kube::Client,
    namespace: &str,
    publication: &JwksPublication,
    image: &str,
) -> Result<Option<(i32, i32)>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let name = object_name(publication);
    if !publication.spec.server.enabled {
        if let Some(d) = deployments.get_opt(&name).await?
            && controlled_by(&d, publication)
        {
            deployments
                .delete(&name, &DeleteParams::background())
                .await?;
        }
        if let Some(s) = services.get_opt(&name).await?
            && controlled_by(&s, publication)
        {
            services.delete(&name, &DeleteParams::background()).await?;
        }
        return Ok(None);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let deployment = deployments
        .patch(
            &name,
            &params,
            &Patch::Apply(build_deployment(publication, image)),
        )
        .await?;
    services
        .patch(&name, &params, &Patch::Apply(build_service(publication)))
        .await?;
    let available = deployment
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Ok(Some((available, publication.spec.server.replicas)))
}

/// Server-side applies the status, conditional on the publication not having changed since it
/// was read, so a slower concurrent reconcile never overwrites a newer `publishedAt`.
async fn write_status(
    publications: &Api<JwksPublication>,
    publication: &JwksPublication,
    status: &crate::api::JwksPublicationStatus,
) -> Result<(), Error> {
    if publication.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": JwksPublication::api_version(&()),
        "kind": JwksPublication::kind(&()),
        "metadata": {"name": publication.name_any(), "resourceVersion": publication.resource_version()},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    publications
        .patch_status(&publication.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}
