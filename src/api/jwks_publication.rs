use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, MicroTime};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::KeyUse;
use super::duration::{DURATION_PATTERN, GoDuration};

/// Which keys to publish, where, and how to serve them.
// kube's printcolumn(...) repeats `type_` by design, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "jwks-operator.io",
    version = "v1alpha1",
    kind = "JwksPublication",
    doc = "Publishes the public keys of the selected SigningKeys as a JWK Set in a ConfigMap, optionally served over HTTP(S) at /.well-known/jwks.json with an OIDC discovery document.",
    namespaced,
    status = "JwksPublicationStatus",
    shortname = "jwkspub",
    category = "jwks",
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keyCount"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Copies",
        type_ = "integer",
        json_path = ".status.copies.upToDate",
        priority = 1
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
    // The server's Service and Deployment take the ConfigMap's name, and a Service name is a
    // DNS-1035 label: `a.b` names a ConfigMap but no Service.
    validation = Rule::new("!has(self.configMapName) || (has(self.server) && has(self.server.enabled) && !self.server.enabled) || (size(self.configMapName) <= 63 && self.configMapName.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))")
        .message("configMapName also names the server's Service: with server.enabled it must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)")
        .field_path(".configMapName"),
)]
pub struct JwksPublicationSpec {
    /// Which SigningKeys of this namespace to publish, by label.
    pub selector: LabelSelector,

    /// Key uses to include: sig (default), enc, or both. Many verifiers (go-jose, the
    /// Kubernetes apiserver) fail a whole set with an unknown key, so keep enc keys apart.
    #[serde(default = "default_use", rename = "use")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v == u))").message("use must not repeat a value"))]
    pub key_use: Vec<KeyUse>,

    /// Name of the ConfigMap holding jwks.json, and of the server's Deployment and Service
    /// (so a DNS-1035 label while the server is enabled). Default: <name>-jwks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: Option<String>,

    /// Issuer URL; when set, an OIDC discovery document is published too. https (http only
    /// for localhost), no query or fragment, exactly as it appears in tokens' `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(
        validation = Rule::new("isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1']))")
            .message("issuer must be an https URL (http only for localhost)"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')").message("issuer must not have a query or fragment")
    )]
    pub issuer: Option<String>,

    /// Path at which the server serves the JWK Set, and which the discovery document's
    /// `jwks_uri` names after the issuer. Default /.well-known/jwks.json; Kubernetes-style
    /// issuers use /openid/v1/jwks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256), regex(pattern = r"^(/[-._~A-Za-z0-9]+)+$"))]
    #[x_kube(
        validation = Rule::new("!(self in ['/.well-known/openid-configuration', '/healthz', '/readyz', '/metrics'])")
            .message("jwksPath must not be a path the server answers with something else (/.well-known/openid-configuration, /healthz, /readyz, /metrics)"),
        validation = Rule::new("!self.contains('/./') && !self.contains('/../') && !self.endsWith('/.') && !self.endsWith('/..')")
            .message("jwksPath must not have . or .. segments (clients normalise them away)")
    )]
    pub jwks_path: Option<String>,

    /// Cache-Control max-age of the served documents. Keep it at most the smallest prePublish
    /// of the selected keys. Default 5m.
    #[serde(default = "default_cache_max_age")]
    #[schemars(extend("default" = "5m"), length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('24h')").message("cacheMaxAge must be between 0s and 24h"))]
    pub cache_max_age: GoDuration,

    /// The HTTP server workload.
    #[serde(default)]
    pub server: ServerSpec,

    /// Identical copies of the ConfigMap in other namespaces, for verifiers there to mount
    /// (a pod mounts ConfigMaps of its own namespace only). Needs the cluster-wide install, and
    /// a target namespace must accept copies from this one (its annotation
    /// jwks-operator.io/accept-copies-from). SigningKeys are never read across namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<CopiesSpec>,
}

/// Which other namespaces get a copy: those matching the selector, and those named.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)")
        .message("copies needs a namespaceSelector or at least one namespace")
)]
pub struct CopiesSpec {
    /// Namespaces whose labels match get a copy ({} matches every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces that get a copy, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(n, self.exists_one(m, m == n))").message("namespaces must not repeat a name"))]
    pub namespaces: Vec<String>,
}

fn default_use() -> Vec<KeyUse> {
    vec![KeyUse::Sig]
}

fn default_cache_max_age() -> GoDuration {
    GoDuration::from_duration(JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE)
}

impl JwksPublicationSpec {
    pub const DEFAULT_CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
    pub const MAX_CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
}

/// Deployment + Service running `jwks-operator serve` with the ConfigMap mounted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Run the server. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Server replicas. Default 2.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    /// Container and Service port. Default 8080.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
    /// A kubernetes.io/tls Secret to serve HTTPS with (reloaded on change). Empty or absent:
    /// plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
    )]
    pub tls_secret_name: Option<String>,
}

impl ServerSpec {
    /// The TLS Secret to serve HTTPS with; `""` (what templates render for "none") is no TLS.
    pub fn tls_secret(&self) -> Option<&str> {
        self.tls_secret_name
            .as_deref()
            .filter(|name| !name.is_empty())
    }
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            enabled: true,
            replicas: default_replicas(),
            port: default_port(),
            tls_secret_name: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_replicas() -> i32 {
    2
}

fn default_port() -> i32 {
    8080
}

/// Observed state of the publication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksPublicationStatus {
    /// When each kid first appeared in the ConfigMap; SigningKey activation waits on this (G1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PublishedKey>,
    /// Number of keys in jwks.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i32>,
    /// Strong ETag (hash) of jwks.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// In-cluster URL of the served JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The copies in other namespaces, when spec.copies asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<CopiesStatus>,
}

/// Where the copies stand. Each list names at most [`CopiesStatus::MAX_LISTED`] namespaces;
/// the Copied condition's message has the counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopiesStatus {
    /// Namespaces that should hold a copy (selected, existing, accepting).
    pub namespaces: i32,
    /// Copies that hold exactly the ConfigMap's content.
    pub up_to_date: i32,
    /// Copies that hold an older set because writing them failed: a key they lack is not
    /// published (its SigningKey does not activate it) until they hold it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
    /// Namespaces where a ConfigMap of that name is not this publication's copy: left alone,
    /// no copy there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting: Vec<String>,
    /// Namespaces selected or named that do not exist or do not accept copies from this
    /// publication's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

impl CopiesStatus {
    pub const MAX_LISTED: usize = 20;
}

/// A kid and when it was first published.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    pub kid: String,
    /// When the kid first appeared in the ConfigMap, to the microsecond: SigningKeys wait
    /// `prePublish` from this instant before they activate the key.
    pub published_at: MicroTime,
}
