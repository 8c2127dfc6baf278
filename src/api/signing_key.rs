use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DURATION_PATTERN, GoDuration};

const SIGNING: &str =
    "['RS256','RS384','RS512','PS256','PS384','PS512','ES256','ES384','ES512','EdDSA']";

/// The desired key: algorithm, rotation schedule and where the Secret goes.
// kube's printcolumn(...) repeats `type_` by design, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "jwks-operator.io",
    version = "v1alpha1",
    kind = "SigningKey",
    doc = "A key pair the operator generates into a Secret and rotates; its public half is published by every JwksPublication whose selector matches this SigningKey's labels.",
    namespaced,
    status = "SigningKeyStatus",
    shortname = "sk",
    category = "jwks",
    printcolumn(name = "Algorithm", type_ = "string", json_path = ".spec.algorithm"),
    printcolumn(name = "Active Kid", type_ = "string", json_path = ".status.activeKid"),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.nextRotationAt"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.keySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS') || self.algorithm.startsWith('RSA-')")
        .message("keySize applies to RSA algorithms only (RS*, PS*, RSA-OAEP*)")
        .field_path(".keySize"),
    validation = Rule::new("!has(self.curve) || self.algorithm.startsWith('ECDH-ES')")
        .message("curve applies to ECDH-ES algorithms only; ES256/ES384/ES512 fix their curve")
        .field_path(".curve"),
    validation = Rule::new(format!("(self.algorithm in {SIGNING}) == (oldSelf.algorithm in {SIGNING})"))
        .message("algorithm cannot switch between a signing and an encryption algorithm; create a new SigningKey")
        .field_path(".algorithm"),
)]
pub struct SigningKeySpec {
    /// JOSE algorithm of the keys. Signing (use=sig): RS256 RS384 RS512 PS256 PS384 PS512 ES256
    /// ES384 ES512 EdDSA. Encryption (use=enc): RSA-OAEP RSA-OAEP-256 ECDH-ES ECDH-ES+A128KW
    /// ECDH-ES+A256KW. May change within its kind: the change starts a rotation and the next key
    /// uses the new algorithm.
    pub algorithm: Algorithm,

    /// RSA modulus size in bits: 2048 (default), 3072 or 4096. RSA algorithms only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [2048, 3072, 4096]))]
    pub key_size: Option<i32>,

    /// Curve for ECDH-ES algorithms: P-256 (default), P-384 or P-521. ECDH-ES* only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<Curve>,

    /// Automatic rotation. Absent: the key is never rotated automatically (manual only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,

    /// Name of the Secret holding the keys. Default: the SigningKey's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretName is immutable; create a new SigningKey to move keys"))]
    pub secret_name: Option<String>,

    /// Extra labels and annotations for the Secret (e.g. for a secret-replication tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Adds a self-signed X.509 certificate for each key, published as `x5c` and `x5t#S256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSpec>,

    /// Adopts an existing private key PEM (PKCS#8, PKCS#1 or SEC1) as the first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_from: Option<ImportFrom>,
}

/// JOSE algorithm (RFC 7518, RFC 8037).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Algorithm {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "RS384")]
    Rs384,
    #[serde(rename = "RS512")]
    Rs512,
    #[serde(rename = "PS256")]
    Ps256,
    #[serde(rename = "PS384")]
    Ps384,
    #[serde(rename = "PS512")]
    Ps512,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "ES384")]
    Es384,
    #[serde(rename = "ES512")]
    Es512,
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "RSA-OAEP")]
    RsaOaep,
    #[serde(rename = "RSA-OAEP-256")]
    RsaOaep256,
    #[serde(rename = "ECDH-ES")]
    EcdhEs,
    #[serde(rename = "ECDH-ES+A128KW")]
    EcdhEsA128kw,
    #[serde(rename = "ECDH-ES+A256KW")]
    EcdhEsA256kw,
}

/// NIST curve for ECDH-ES keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-384")]
    P384,
    #[serde(rename = "P-521")]
    P521,
}

/// The rotation schedule. With interval I, prePublish P and gracePeriod G, a new key is
/// published at activation + I − P, starts signing at activation + I (once every selecting
/// publication has served it for P), and the old key is removed G after it stopped signing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.interval) || duration(self.interval) > duration(self.prePublish)")
        .message("interval must be longer than prePublish")
        .field_path(".interval"),
)]
pub struct RotationSpec {
    /// How long a key signs before the next one takes over (Go duration, e.g. 720h; at most
    /// 26280h, three years). Absent: no automatic rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("interval must be positive"),
        validation = Rule::new("duration(self) <= duration('26280h')").message("interval must be at most 26280h (three years)"),
    )]
    pub interval: Option<GoDuration>,

    /// How long a new key is published before it signs; at least the verifiers' JWKS cache
    /// lifetime (jose caches 10m, PyJWT 5m). Default 1h, at most 2160h (90 days).
    #[serde(default = "RotationSpec::default_pre_publish")]
    #[schemars(extend("default" = "1h"), length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2160h')").message("prePublish must be at most 2160h (90 days)"))]
    pub pre_publish: GoDuration,

    /// How long a retired key stays published after it stopped signing; at least the longest
    /// token lifetime. Default 24h, at most 8760h (a year).
    #[serde(default = "RotationSpec::default_grace_period")]
    #[schemars(extend("default" = "24h"), length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')").message("gracePeriod must be at most 8760h (a year)"))]
    pub grace_period: GoDuration,
}

impl RotationSpec {
    pub const DEFAULT_PRE_PUBLISH: std::time::Duration = std::time::Duration::from_secs(3600);
    pub const DEFAULT_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    /// The bounds the schema enforces (NIST SP 800-57 puts a signing key's cryptoperiod at one
    /// to three years; a year of grace covers any sane token lifetime). The operator checks them
    /// again for objects stored before the schema did.
    pub const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(26_280 * 3600);
    pub const MAX_PRE_PUBLISH: std::time::Duration = std::time::Duration::from_secs(2_160 * 3600);
    pub const MAX_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(8_760 * 3600);

    fn default_pre_publish() -> GoDuration {
        GoDuration::from_duration(Self::DEFAULT_PRE_PUBLISH)
    }

    fn default_grace_period() -> GoDuration {
        GoDuration::from_duration(Self::DEFAULT_GRACE_PERIOD)
    }
}

impl SigningKey {
    /// The Secret that holds the keys: `spec.secretName`, else the SigningKey's own name.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}

impl SigningKeySpec {
    /// The rotation settings, with the CRD's defaults when `rotation` is absent: the one
    /// reading of an absent `rotation` (planner, publication, CLI).
    pub fn rotation(&self) -> RotationSpec {
        self.rotation.clone().unwrap_or_default()
    }
}

/// No automatic rotation, the default prePublish and gracePeriod: what an absent `rotation`
/// means.
impl Default for RotationSpec {
    fn default() -> Self {
        RotationSpec {
            interval: None,
            pre_publish: Self::default_pre_publish(),
            grace_period: Self::default_grace_period(),
        }
    }
}

/// Labels and annotations added to the generated Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A self-signed certificate for each key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Subject common name, also the certificate's DNS name.
    #[schemars(length(min = 1, max = 64))]
    pub common_name: String,
}

/// Where to find a private key PEM to adopt as the first key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportFrom {
    /// Secret in the SigningKey's namespace holding the PEM.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: String,
    /// Data key of the PEM within that Secret. Default: tls.key.
    #[serde(default = "default_import_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_import_key() -> String {
    "tls.key".into()
}

/// Observed state, rebuilt from the Secret alone when lost.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyStatus {
    /// Key id (RFC 7638 thumbprint) of the key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_kid: Option<String>,
    /// When the active key is due to hand over to its successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<MicroTime>,
    /// Every key the operator still holds, oldest first, with its public JWK.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One held key and its lifecycle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub kid: String,
    pub state: KeyState,
    /// When the key was generated (or imported) and first offered for publication.
    pub created_at: MicroTime,
    /// When the key started signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<MicroTime>,
    /// When the key stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<MicroTime>,
    /// When the retired key leaves the Secret and every JWKS (retiredAt + gracePeriod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<MicroTime>,
    /// The public JWK exactly as published (no private members, ever).
    #[schemars(schema_with = "public_jwk_schema")]
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
}

/// Pending (published, not yet signing) → Active (signing; exactly one) → Retired (published
/// until removeAfter) → removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum KeyState {
    Pending,
    Active,
    Retired,
}

/// The JWK use (RFC 7517 §4.2).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum KeyUse {
    #[serde(rename = "sig")]
    Sig,
    #[serde(rename = "enc")]
    Enc,
}

fn public_jwk_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Public JWK (RFC 7517): kty, kid, alg, use and the public key members.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
