//! The custom resources: `SigningKey` and `JwksPublication` (API group `jwks-operator.io`,
//! version `v1alpha1`). Data and admission rules only; no behaviour.

pub mod conditions;
mod duration;
mod jwks_publication;
mod signing_key;

pub use duration::{DurationError, GoDuration};
pub use jwks_publication::{
    CopiesSpec, CopiesStatus, JwksPublication, JwksPublicationSpec, JwksPublicationStatus,
    PublishedKey, ServerSpec,
};
pub use signing_key::{
    Algorithm, CertificateSpec, Curve, ImportFrom, KeyState, KeyStatus, KeyUse, RotationSpec,
    SecretTemplate, SigningKey, SigningKeySpec, SigningKeyStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub const GROUP: &str = "jwks-operator.io";

/// The label every object the operator creates carries, with the value [`MANAGER`]: the
/// operator's watches of owned objects select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "jwks-operator";

/// Label selecting the SigningKeys a publication named in it includes (the examples' convention).
pub const PUBLICATION_LABEL: &str = "jwks-operator.io/publication";

/// SigningKey annotation: a new value starts a rotation now (normal pre-publication applies).
pub const ROTATE_ANNOTATION: &str = "jwks-operator.io/rotate";

/// SigningKey annotation: comma-separated kids to withdraw from every JWKS at once.
pub const REVOKE_ANNOTATION: &str = "jwks-operator.io/revoke";

/// Annotation on a Secret named by a SigningKey's `spec.importFrom`: the names of the SigningKeys
/// (comma-separated, same namespace) that may import its private key. Without it, no import.
pub const IMPORT_CONSENT_ANNOTATION: &str = "jwks-operator.io/import-to";

/// Namespace annotation: the namespaces (comma-separated, or `*` for all) whose
/// JwksPublications may place copies of their ConfigMap here. Without it, none may.
pub const ACCEPT_COPIES_ANNOTATION: &str = "jwks-operator.io/accept-copies-from";

/// Label on a copy in another namespace: the UID of the JwksPublication it copies (owner
/// references cannot cross namespaces; this and [`MANAGED_BY_LABEL`] mark the copy as ours).
pub const COPY_OF_LABEL: &str = "jwks-operator.io/copy-of";

/// Annotation on a copy: `<namespace>/<name>` of the JwksPublication it copies.
pub const COPY_SOURCE_ANNOTATION: &str = "jwks-operator.io/copy-source";

/// Finalizer on a JwksPublication with copies: they are removed before it goes.
pub const COPIES_FINALIZER: &str = "jwks-operator.io/copies";

/// The kids a SigningKey's revoke annotation names (comma-separated, blanks ignored).
pub fn revoked_kids(key: &SigningKey) -> std::collections::BTreeSet<String> {
    use kube::ResourceExt;
    key.annotations()
        .get(REVOKE_ANNOTATION)
        .map(|value| kid_list(value).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The revoke annotation's value after adding `kids` to `existing`: the union, sorted, without
/// duplicates (what `jwks-operator revoke` writes).
pub fn revoke_value(existing: Option<&str>, kids: &[String]) -> String {
    let mut all: std::collections::BTreeSet<&str> =
        kid_list(existing.unwrap_or_default()).collect();
    all.extend(kids.iter().map(String::as_str));
    all.into_iter().collect::<Vec<_>>().join(",")
}

fn kid_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|kid| !kid.is_empty())
}

/// Every CRD this operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![SigningKey::crd(), JwksPublication::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                unwrap_descriptions(schema);
            }
        }
    }
    crds
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps text itself,
/// so join the lines of each paragraph (a blank line still separates paragraphs).
fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(text) = schema.description.as_mut() {
        *text = text
            .split("\n\n")
            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    let children = schema.properties.iter_mut().flat_map(|p| p.values_mut());
    let items = schema.items.iter_mut().filter_map(|items| match items {
        JSONSchemaPropsOrArray::Schema(schema) => Some(schema.as_mut()),
        JSONSchemaPropsOrArray::Schemas(_) => None,
    });
    let additional = schema
        .additional_properties
        .iter_mut()
        .filter_map(|extra| match extra {
            JSONSchemaPropsOrBool::Schema(schema) => Some(schema.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        });
    for child in children.chain(items).chain(additional) {
        unwrap_descriptions(child);
    }
}

/// The CRDs as YAML documents, each with the file name it has in `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default());
            Ok((name, format!("---\n{}", serde_saphyr::to_string(&crd)?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn revoked_kids_are_a_sorted_union_without_duplicates() {
        assert_eq!(revoke_value(None, &kids(&["b", "a", "b"])), "a,b");
        assert_eq!(revoke_value(Some("c,a"), &kids(&["b", "a"])), "a,b,c");
        assert_eq!(revoke_value(Some(" a , ,b,"), &kids(&["c"])), "a,b,c");
        assert_eq!(revoke_value(Some(""), &kids(&["x"])), "x");
    }

    #[test]
    fn default_rotation_is_what_an_empty_rotation_deserializes_to() {
        let rotation = RotationSpec::default();
        assert_eq!(rotation.interval, None);
        assert_eq!(
            rotation.pre_publish.parse(),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            rotation.grace_period.parse(),
            Ok(std::time::Duration::from_secs(86_400))
        );
        let empty: RotationSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(empty, rotation);
    }

    /// The schema's defaults (written as strings in the schemars attributes) are the constants
    /// the operator falls back on: one fact, checked here.
    #[test]
    fn schema_defaults_are_the_operators_defaults() {
        let schema = |crd: CustomResourceDefinition| {
            serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"]
                ["properties"]["spec"]["properties"]
                .clone()
        };
        let default_of = |value: &serde_json::Value| -> std::time::Duration {
            GoDuration::from(value.as_str().unwrap()).parse().unwrap()
        };
        let key = schema(SigningKey::crd());
        let rotation = &key["rotation"]["properties"];
        assert_eq!(
            default_of(&rotation["prePublish"]["default"]),
            RotationSpec::DEFAULT_PRE_PUBLISH
        );
        assert_eq!(
            default_of(&rotation["gracePeriod"]["default"]),
            RotationSpec::DEFAULT_GRACE_PERIOD
        );
        let publication = schema(JwksPublication::crd());
        assert_eq!(
            default_of(&publication["cacheMaxAge"]["default"]),
            JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE
        );
    }
}
