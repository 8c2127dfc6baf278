//! The two ways the operator writes an object it reconciles or owns, both server-side apply
//! under [`FIELD_MANAGER`] and both conditional on what was read, so a slower concurrent writer
//! gets 409 Conflict and re-plans instead of going backwards (G4, G7).

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{During, Error, FIELD_MANAGER};

/// An object with a status subresource of type `Status`.
pub trait HasStatus:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug
{
    type Status: Serialize + PartialEq;

    fn status(&self) -> Option<&Self::Status>;
}

impl HasStatus for crate::api::SigningKey {
    type Status = crate::api::SigningKeyStatus;

    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
}

impl HasStatus for crate::api::JwksPublication {
    type Status = crate::api::JwksPublicationStatus;

    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
}

/// Applies `status` to `object` unless it already has it, on condition that the object has
/// not changed since it was read: a slower reconcile never overwrites a newer status (a newer
/// `publishedAt`, a newer ring).
pub async fn write_status<K: HasStatus>(
    api: &Api<K>,
    object: &K,
    status: &K::Status,
) -> Result<(), Error> {
    if object.status() == Some(status) {
        return Ok(());
    }
    let name = object.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "resourceVersion": object.resource_version()},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&name, &params, &Patch::Apply(&patch))
        .await
        .during("write the status of", describe(object))?;
    Ok(())
}

/// A resourceVersion no object ever has (etcd revisions are signed 64-bit numbers).
const NEVER_A_VERSION: &str = "18446744073709551615";

/// Server-side applies `desired` on condition that the object is still as `observed` was read:
/// at its resourceVersion, or still absent. An apply carrying a resourceVersion is refused with
/// 409 Conflict unless the object is at exactly that version, and creates the object when it is
/// absent (the version is a precondition on updates only); so with [`NEVER_A_VERSION`] it can
/// only create. A writer that read an older version, or did not see a creation, re-plans with
/// fresh reads: it never goes backwards and never takes over an object of someone else.
pub async fn apply_if_unchanged<K>(
    api: &Api<K>,
    observed: Option<&K>,
    mut desired: K,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let version = observed
        .and_then(|o| o.meta().resource_version.clone())
        .unwrap_or_else(|| NEVER_A_VERSION.to_owned());
    desired.meta_mut().resource_version = Some(version);
    let name = desired.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&desired))
        .await
        .during("apply", describe(&desired))
}

/// `Kind namespace/name`, as errors and logs name an object.
pub fn describe<K: Resource<DynamicType = ()>>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{} {namespace}/{}", K::kind(&()), object.name_any()),
        None => format!("{} {}", K::kind(&()), object.name_any()),
    }
}
