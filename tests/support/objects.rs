//! Builders for the operator's objects, so a test states only what it is about, and small
//! readers of what the operator wrote.
//!
//! ```ignore
//! let key = SigningKeyBuilder::new("api").algorithm("ES256").rotate_every("1h").build();
//! create(&keys, &key).await;
//! ```

use std::marker::PhantomData;

use jwks_operator::api::{JwksPublication, SigningKey};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// The label a publication's selector matches in most tests.
pub use jwks_operator::api::PUBLICATION_LABEL;

/// A manifest of kind `K` (SigningKey or JwksPublication): name, labels and a spec built
/// field by field, or given whole.
#[derive(Clone, Debug)]
pub struct Builder<K> {
    name: String,
    labels: Map<String, Value>,
    spec: Map<String, Value>,
    kind: PhantomData<K>,
}

pub type SigningKeyBuilder = Builder<SigningKey>;
pub type PublicationBuilder = Builder<JwksPublication>;

impl<K> Builder<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    pub fn new(name: &str) -> Self {
        Builder {
            name: name.to_owned(),
            labels: Map::new(),
            spec: Map::new(),
            kind: PhantomData,
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), json!(value));
        self
    }

    /// Adds every label of a JSON object (`{}` adds none).
    pub fn labels(mut self, labels: Value) -> Self {
        self.labels.extend(object(labels, "labels"));
        self
    }

    /// Sets every field of a JSON object in the spec (a whole spec, or the odd field).
    pub fn spec(mut self, spec: Value) -> Self {
        self.spec.extend(object(spec, "a spec"));
        self
    }

    /// Sets one spec field.
    pub fn field(mut self, name: &str, value: Value) -> Self {
        self.spec.insert(name.to_owned(), value);
        self
    }

    /// The manifest as JSON (to apply, or to render as YAML).
    pub fn json(&self) -> Value {
        let mut metadata = json!({ "name": self.name });
        if !self.labels.is_empty() {
            metadata["labels"] = Value::Object(self.labels.clone());
        }
        json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": metadata,
            "spec": self.spec,
        })
    }

    pub fn build(&self) -> K {
        typed(self.json())
    }
}

impl Builder<SigningKey> {
    pub fn algorithm(self, algorithm: &str) -> Self {
        self.field("algorithm", json!(algorithm))
    }

    pub fn rotate_every(self, interval: &str) -> Self {
        self.rotation("interval", interval)
    }

    pub fn pre_publish(self, duration: &str) -> Self {
        self.rotation("prePublish", duration)
    }

    pub fn grace_period(self, duration: &str) -> Self {
        self.rotation("gracePeriod", duration)
    }

    fn rotation(mut self, name: &str, value: &str) -> Self {
        let rotation = self.spec.entry("rotation").or_insert_with(|| json!({}));
        rotation[name] = json!(value);
        self
    }
}

impl Builder<JwksPublication> {
    /// Selects the keys whose labels include all of `labels` (a JSON object).
    pub fn match_labels(self, labels: Value) -> Self {
        self.selector(json!({ "matchLabels": labels }))
    }

    /// Selects the keys labelled `jwks-operator.io/publication: <value>`.
    pub fn publication_label(self, value: &str) -> Self {
        self.match_labels(json!({ PUBLICATION_LABEL: value }))
    }

    pub fn selector(self, selector: Value) -> Self {
        self.field("selector", selector)
    }

    /// Whether the operator runs a server for it (`spec.server.enabled`).
    pub fn server(self, enabled: bool) -> Self {
        self.field("server", json!({ "enabled": enabled }))
    }
}

/// Creates `object` through `api`; panics naming the object if the apiserver refuses it.
pub async fn create<K>(api: &Api<K>, object: &K) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| {
            let kind = K::kind(&K::DynamicType::default()).to_string();
            let name = object.meta().name.as_deref().unwrap_or_default();
            panic!("cannot create {kind} {name}: {e}")
        })
}

/// Creates the object a JSON manifest describes (for kinds without a builder).
pub async fn create_from<K>(api: &Api<K>, manifest: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    create(api, &typed(manifest)).await
}

/// Someone else's Service `name` (selecting `app: theirs`), for tests of what the operator
/// must not take over.
pub fn foreign_service(name: &str) -> Service {
    typed(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}}),
    )
}

/// Someone else's Deployment `name` (no replicas), like [`foreign_service`].
pub fn foreign_deployment(name: &str) -> Deployment {
    typed(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                 "template": {"metadata": {"labels": {"app": "theirs"}},
                              "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}),
    )
}

/// The field managers that have written an object, in order.
pub fn managers(meta: &ObjectMeta) -> Vec<&str> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect()
}

/// The kids of a JWK Set document (`{"keys": [...]}`), in order.
pub fn kids_in_jwks(jwks: &str) -> Vec<String> {
    let set: Value =
        serde_json::from_str(jwks).unwrap_or_else(|e| panic!("not a JWK Set ({e}): {jwks}"));
    set["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("a JWK Set without keys: {jwks}"))
        .iter()
        .map(|k| {
            k["kid"]
                .as_str()
                .unwrap_or_else(|| panic!("a JWK without kid: {k}"))
                .to_owned()
        })
        .collect()
}

fn object(value: Value, what: &str) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{what} must be a JSON object, not {other}"),
    }
}

fn typed<K: DeserializeOwned>(manifest: Value) -> K {
    serde_json::from_value(manifest.clone())
        .unwrap_or_else(|e| panic!("not a valid manifest ({e}): {manifest}"))
}
