//! Key handling, pure: generation, PEM import and export, JWK encoding, RFC 7638 key ids,
//! self-signed certificates for `x5c`, and the JWK Set linter. Nothing here knows Kubernetes.

mod algorithm;
mod b64;
mod der;
mod error;
mod import;
mod jwk;
mod key;
pub mod lint;
mod x509;

pub use algorithm::{
    Algorithm, Curve, KeyKind, KeySpec, KeyUse, RSA_KEY_SIZES, RSA_MAX_BITS, RSA_MIN_BITS,
};
pub use error::Error;
pub use import::{ImportedKey, key_from_pem, private_key_from_pem};
pub use jwk::{Jwk, PrivateJwk, public_material, thumbprint, thumbprint_of_json};
pub use key::{PrivateKey, PrivateMaterial, PrivateMembers, PublicKey, PublicMaterial};
pub use x509::self_signed_certificate;

/// Canonical JSON (RFC 8785 for the ASCII member names JOSE uses): members sorted, no
/// whitespace. Stable bytes for the same input keep GitOps diffs and ConfigMap churn at zero.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so a round trip sorts every object.
    serde_json::to_string(&serde_json::to_value(value)?)
}
