//! Small builders for the unit tests of this controller.

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::json;

use crate::api::conditions::{ConditionStatus, PublicationCondition, PublicationReason, Term};
use crate::api::{JwksPublication, JwksPublicationStatus};
use crate::controller::conditions::{find, reason_of};
use crate::publication::Published;

use super::copies::Copying;
use super::server::Server;
use super::status::Facts;

pub fn publication(server: serde_json::Value) -> JwksPublication {
    named("main", json!({"server": server}))
}

/// A publication `auth/<name>` (uid `u-1`, generation 3) with this spec and an empty selector.
pub fn named(name: &str, mut spec: serde_json::Value) -> JwksPublication {
    spec["selector"] = json!({});
    serde_json::from_value(json!({
        "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
        "metadata": {"name": name, "namespace": "auth", "uid": "u-1", "generation": 3},
        "spec": spec,
    }))
    .unwrap()
}

/// A publication that asks for no copies.
pub static NO_COPIES: Copying = Copying::NotAsked;

pub fn facts<'a>(
    publication: &'a JwksPublication,
    served: &'a [String],
    server: Server,
) -> Facts<'a> {
    Facts {
        publication,
        served,
        added: &[],
        etag: Some("\"e\"".into()),
        publish_problem: None,
        spec_problem: None,
        warnings: &[],
        sources: 1,
        server,
        copying: &NO_COPIES,
        now: Timestamp::UNIX_EPOCH,
    }
}

/// A condition of `status` as (status, reason, message), parsed back from its wire spelling.
pub fn condition_of(
    status: &JwksPublicationStatus,
    type_: PublicationCondition,
) -> (ConditionStatus, PublicationReason, &str) {
    let c = find(&status.conditions, type_).unwrap();
    let holds = ConditionStatus::parse(&c.status).unwrap();
    (holds, reason_of(c).unwrap(), c.message.as_str())
}

/// An object named `name`, controlled by the publication `uid` (or by nothing).
pub fn object<K: Resource<DynamicType = ()> + Default>(name: &str, controller: Option<&str>) -> K {
    let mut object = K::default();
    object.meta_mut().name = Some(name.into());
    object.meta_mut().uid = Some(format!("uid-of-{name}"));
    object.meta_mut().resource_version = Some("7".into());
    if let Some(uid) = controller {
        let mut owner = named("main", json!({})).controller_owner_ref(&()).unwrap();
        owner.uid = uid.into();
        object.meta_mut().owner_references = Some(vec![owner]);
    }
    object
}

pub fn published(jwks: &str) -> Published {
    Published {
        jwks: jwks.into(),
        discovery: None,
        max_age_seconds: 300,
        jwks_path: crate::publication::JWKS_PATH.into(),
    }
}
