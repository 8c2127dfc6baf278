//! The custom resources: `SigningKey` and `JwksPublication` (API group `jwks-operator.io`,
//! version `v1alpha1`). Data and admission rules only; no behaviour.

mod jwks_publication;
mod signing_key;

pub use jwks_publication::{
    JwksPublication, JwksPublicationSpec, JwksPublicationStatus, PublishedKey, ServerSpec,
};
pub use signing_key::{
    Algorithm, CertificateSpec, Curve, ImportFrom, KeyState, KeyStatus, KeyUse, RotationSpec,
    SecretTemplate, SigningKey, SigningKeySpec, SigningKeyStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "jwks-operator.io";

/// Label selecting the SigningKeys a publication named in it includes (the examples' convention).
pub const PUBLICATION_LABEL: &str = "jwks-operator.io/publication";

/// Every CRD this operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![SigningKey::crd(), JwksPublication::crd()]
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
