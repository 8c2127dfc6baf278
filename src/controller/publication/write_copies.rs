//! The copies' I/O: the finalizer that removes them with the publication, the target
//! namespaces read, each copy written (never ahead of the ConfigMap itself), and the copies no
//! longer wanted deleted. What a copy is and what the copies let the status claim is in
//! [`super::copies`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{COPIES_FINALIZER, JwksPublication};
use crate::publication::{Assembled, Published};

use super::super::apply::{apply_if_unchanged, describe};
use super::super::{Context, During, Error, FIELD_MANAGER, Scope};
use super::config_map::Publishing;
use super::copies::{self, CopyPlan, CopyState, Copying, copies_selector, is_copy_of, plan_copy};
use super::delete_exactly;
use super::naming::object_name;

/// Why this operator cannot make copies in other namespaces, if it cannot.
fn copies_not_allowed(scope: &Scope) -> Option<String> {
    match scope {
        Scope::AllNamespaces => None,
        Scope::Namespace(namespace) => Some(format!(
            "the operator manages namespace {namespace} only (a namespaced install): copies in other namespaces need the cluster-wide install"
        )),
    }
}

/// Adds the finalizer that removes the copies with the publication, before any copy is
/// written; the publication as it is after.
pub async fn hold_copies(
    context: &Context,
    publication: JwksPublication,
) -> Result<JwksPublication, Error> {
    let wanted = publication.spec.copies.is_some() && copies_not_allowed(&context.scope).is_none();
    if !wanted || holds_copies(&publication) {
        return Ok(publication);
    }
    set_copies_finalizer(&context.client, &publication, true).await
}

/// Removes every copy, then the finalizer, when the publication holds one: it is being deleted
/// or asks for no copies any more.
pub async fn release_copies(
    client: &kube::Client,
    publication: &JwksPublication,
) -> Result<(), Error> {
    if !holds_copies(publication) {
        return Ok(());
    }
    let existing = list_copies(client, publication).await?;
    remove_copies(client, publication, &existing, &[]).await?;
    set_copies_finalizer(client, publication, false).await?;
    Ok(())
}

fn holds_copies(publication: &JwksPublication) -> bool {
    publication
        .finalizers()
        .iter()
        .any(|f| f == COPIES_FINALIZER)
}

/// Adds or removes [`COPIES_FINALIZER`], on condition that the publication is as it was read
/// (the finalizer list is replaced whole).
async fn set_copies_finalizer(
    client: &kube::Client,
    publication: &JwksPublication,
    hold: bool,
) -> Result<JwksPublication, Error> {
    let mut finalizers: Vec<&str> = publication
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| *f != COPIES_FINALIZER)
        .collect();
    if hold {
        finalizers.push(COPIES_FINALIZER);
    }
    let patch = json!({"metadata": {
        "resourceVersion": publication.resource_version(),
        "finalizers": finalizers,
    }});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let api: Api<JwksPublication> =
        Api::namespaced(client.clone(), &publication.namespace().unwrap_or_default());
    api.patch(&publication.name_any(), &params, &Patch::Merge(&patch))
        .await
        .during("update the finalizers of", describe(publication))
}

/// Brings a copy in each target namespace up to date with the ConfigMap (never ahead of it),
/// and removes the copies no longer wanted.
pub async fn copy(
    context: &Context,
    publication: &JwksPublication,
    assembled: &Assembled,
    publishing: &Publishing,
) -> Result<Copying, Error> {
    let Some(spec) = &publication.spec.copies else {
        return Ok(Copying::NotAsked);
    };
    if let Some(why) = copies_not_allowed(&context.scope) {
        return Ok(Copying::NotAllowed(why));
    }
    if publishing.problem.is_some() {
        return Ok(Copying::Deferred);
    }
    let client = &context.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespaces = match namespaces.list_metadata(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Copying::NotAllowed(format!(
                "the operator may not list namespaces: {}",
                status.message
            )));
        }
        listed => listed.during("list", "Namespaces")?.items,
    };
    let namespaces: Vec<ObjectMeta> = namespaces.into_iter().map(|n| n.metadata).collect();
    let targets = copies::targets(publication, spec, &namespaces);
    let existing = list_copies(client, publication).await?;
    let name = object_name(publication);
    let mut states = BTreeMap::new();
    for namespace in &targets.wanted {
        let ours = existing
            .iter()
            .find(|c| c.namespace().as_deref() == Some(namespace) && c.name_any() == name);
        let state = write_copy(client, publication, namespace, ours, &assembled.published).await?;
        states.insert(namespace.clone(), state);
    }
    remove_copies(client, publication, &existing, &targets.wanted).await?;
    Ok(Copying::Done {
        copies: states,
        refused: targets.refused,
    })
}

/// Every copy of the publication, in any namespace.
async fn list_copies(
    client: &kube::Client,
    publication: &JwksPublication,
) -> Result<Vec<ConfigMap>, Error> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let selector = ListParams::default().labels(&copies_selector(publication));
    Ok(all
        .list(&selector)
        .await
        .during("list", format!("the copies of {}", describe(publication)))?
        .items)
}

/// Writes the copy in `namespace` unless a ConfigMap there of that name is not ours. A write
/// refused there (admission, quota, a namespace going away) leaves the copy stale, which holds
/// new keys back, and never stops the other namespaces' copies.
async fn write_copy(
    client: &kube::Client,
    publication: &JwksPublication,
    namespace: &str,
    ours: Option<&ConfigMap>,
    published: &Published,
) -> Result<CopyState, Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = object_name(publication);
    // Not among our copies: whatever holds the name decides between a conflict and a create.
    let existing = match ours {
        Some(copy) => Some(copy.clone()),
        None => config_maps
            .get_opt(&name)
            .await
            .during("read", format!("ConfigMap {namespace}/{name}"))?,
    };
    let desired = match plan_copy(publication, namespace, existing.as_ref(), published) {
        CopyPlan::Conflict => return Ok(CopyState::Conflict),
        CopyPlan::Unchanged => return Ok(CopyState::UpToDate { added: Vec::new() }),
        CopyPlan::Write(desired) => *desired,
    };
    let error = match apply_if_unchanged(&config_maps, existing.as_ref(), desired.clone()).await {
        Ok(_) => {
            info!(copy = namespace, "copy written");
            None
        }
        // Someone wrote it since it was read: re-plan with fresh reads.
        Err(error) if error.is_conflict() => return Err(error),
        Err(error) => {
            warn!(copy = namespace, %error, "cannot write a copy");
            Some(error.to_string())
        }
    };
    Ok(CopyState::after_write(existing.as_ref(), &desired, error))
}

/// Deletes the copies among `existing` that are not in a `keep` namespace under the current
/// name.
async fn remove_copies(
    client: &kube::Client,
    publication: &JwksPublication,
    existing: &[ConfigMap],
    keep: &[String],
) -> Result<(), Error> {
    let name = object_name(publication);
    for copy in existing
        .iter()
        .filter(|c| is_copy_of(&c.metadata, publication))
    {
        let namespace = copy.namespace().unwrap_or_default();
        if keep.contains(&namespace) && copy.name_any() == name {
            continue;
        }
        let (Some(copy_name), Some(uid)) = (copy.metadata.name.clone(), copy.uid()) else {
            continue;
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        delete_exactly(&api, &copy_name, uid).await?;
    }
    Ok(())
}
