//! The custom resources: `SigningKey` and `JwksPublication` (API group `jwks-operator.io`,
//! version `v1alpha1`). Data and admission rules only; no behaviour.

mod duration;
mod jwks_publication;
mod signing_key;

pub use duration::{DurationError, GoDuration};
pub use jwks_publication::{
    JwksPublication, JwksPublicationSpec, JwksPublicationStatus, PublishedKey, ServerSpec,
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

/// Label selecting the SigningKeys a publication named in it includes (the examples' convention).
pub const PUBLICATION_LABEL: &str = "jwks-operator.io/publication";

/// SigningKey annotation: a new value starts a rotation now (normal pre-publication applies).
pub const ROTATE_ANNOTATION: &str = "jwks-operator.io/rotate";

/// SigningKey annotation: comma-separated kids to withdraw from every JWKS at once.
pub const REVOKE_ANNOTATION: &str = "jwks-operator.io/revoke";

/// Annotation on a Secret named by a SigningKey's `spec.importFrom`: the names of the SigningKeys
/// (comma-separated, same namespace) that may import its private key. Without it, no import.
pub const IMPORT_CONSENT_ANNOTATION: &str = "jwks-operator.io/import-to";

/// The kids a SigningKey's revoke annotation names (comma-separated, blanks ignored).
pub fn revoked_kids(key: &SigningKey) -> std::collections::BTreeSet<String> {
    use kube::ResourceExt;
    key.annotations()
        .get(REVOKE_ANNOTATION)
        .map(|kids| {
            kids.split(',')
                .map(str::trim)
                .filter(|kid| !kid.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
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
