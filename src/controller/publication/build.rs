//! The objects a JwksPublication owns and the status it reports, as pure functions of the
//! publication and what was assembled.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, MicroTime, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::api::{
    JwksPublication, JwksPublicationSpec, JwksPublicationStatus, MANAGED_BY_LABEL, MANAGER,
    PublishedKey,
};
use crate::publication::{JWKS_KEY, JWKS_PATH, Published, strong_etag};

pub const PUBLICATION_NAME_LABEL: &str = "jwks-operator.io/publication-name";

/// Where the server container reads the mounted ConfigMap and TLS Secret.
const CONTENT_DIR: &str = "/etc/jwks";
const TLS_DIR: &str = "/etc/jwks-tls";
/// The image's unprivileged user (distroless `nonroot`).
const SERVER_UID: i64 = 65532;

/// The ConfigMap, Deployment and Service share this name: `spec.configMapName`, default
/// `<name>-jwks`.
pub fn object_name(publication: &JwksPublication) -> String {
    publication
        .spec
        .config_map_name
        .clone()
        .unwrap_or_else(|| format!("{}-jwks", publication.name_any()))
}

/// Why [`object_name`] cannot name what the publication needs: `config_map` when not even the
/// ConfigMap can bear it; otherwise only the server's Service cannot.
#[derive(Debug, PartialEq)]
pub struct NameProblem {
    pub config_map: bool,
    pub message: String,
}

/// Checks [`object_name`] against the apiserver's rules before anything is written, so a name
/// admitted before the schema refused it (or derived from a dotted `metadata.name`) becomes a
/// condition instead of a write the apiserver refuses on every retry.
pub fn check_name(publication: &JwksPublication) -> Option<NameProblem> {
    let name = object_name(publication);
    let which = match &publication.spec.config_map_name {
        Some(_) => format!("spec.configMapName {name:?}"),
        None => format!("the default name {name:?} (<metadata.name>-jwks)"),
    };
    if !is_dns1123_subdomain(&name) {
        return Some(NameProblem {
            config_map: true,
            message: format!(
                "{which} is not a valid ConfigMap name (lowercase letters, digits, '-' and '.', at most 253 characters); set spec.configMapName"
            ),
        });
    }
    (publication.spec.server.enabled && !is_dns1035_label(&name)).then(|| NameProblem {
        config_map: false,
        message: format!(
            "{which} cannot name the server's Service: with server.enabled it must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters); set spec.configMapName or server.enabled: false. The ConfigMap is published; the server is not run"
        ),
    })
}

/// A Service name (RFC 1035 label as Kubernetes restricts it).
fn is_dns1035_label(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A ConfigMap (or Deployment) name: dot-separated RFC 1123 labels, at most 253 characters
/// (Kubernetes does not limit the labels' length here).
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// What the spec holds that the operator cannot use as written (objects stored before the
/// schema refused it): a condition reason and message. The documents then use the default.
pub fn spec_problem(publication: &JwksPublication) -> Option<(&'static str, String)> {
    let max_age = &publication.spec.cache_max_age;
    max_age
        .parse_at_most(JwksPublicationSpec::MAX_CACHE_MAX_AGE)
        .err()
        .map(|error| {
            (
                "InvalidSpec",
                format!(
                    "spec.cacheMaxAge: {error}; the documents carry the default max-age of {}s meanwhile",
                    JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE.as_secs()
                ),
            )
        })
}

fn metadata(publication: &JwksPublication) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(publication)),
        namespace: publication.namespace(),
        labels: Some(labels(publication)),
        owner_references: publication.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn labels(publication: &JwksPublication) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.into(), MANAGER.into()),
        (PUBLICATION_NAME_LABEL.into(), name_label(publication)),
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), name_label(publication)),
    ])
}

/// The label selector that finds every object a publication may own (with the owner reference
/// UID, which proves it).
pub fn owned_selector(publication: &JwksPublication) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGER},{PUBLICATION_NAME_LABEL}={}",
        name_label(publication)
    )
}

/// The publication's name as a label value: itself when it fits (63 characters), else a prefix
/// and a hash of the whole, so a long name (valid for the object) still gives valid labels.
fn name_label(publication: &JwksPublication) -> String {
    let name = publication.name_any();
    if name.len() <= 63 {
        return name;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix = name.get(..40).unwrap_or_default();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

fn selector_labels(publication: &JwksPublication) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), name_label(publication)),
    ])
}

pub fn build_config_map(publication: &JwksPublication, published: &Published) -> ConfigMap {
    ConfigMap {
        metadata: metadata(publication),
        data: Some(published.to_data()),
        ..ConfigMap::default()
    }
}

/// Bytes the ConfigMap's data takes; the apiserver refuses objects over 1 MiB in total, and
/// the metadata needs some of that.
fn data_size(published: &Published) -> usize {
    published
        .to_data()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

pub const CONFIG_MAP_DATA_LIMIT: usize = 1024 * 1024 - 16 * 1024;

/// What to do with the ConfigMap.
#[derive(Debug, PartialEq)]
pub enum ConfigMapAction {
    /// Apply this ConfigMap: its content changed.
    Write(Box<ConfigMap>),
    /// The ConfigMap already holds exactly this content: no write, no churn (G5).
    Unchanged,
    /// Leave it as it is, for this reason (a condition reason) and message.
    Refuse(&'static str, String),
}

/// Decides the ConfigMap write: never over a ConfigMap that is someone else's, never content
/// the apiserver would refuse or truncate.
pub fn plan_config_map(
    publication: &JwksPublication,
    existing: Option<&ConfigMap>,
    published: &Published,
) -> ConfigMapAction {
    let name = object_name(publication);
    if let Some(existing) = existing
        && !controlled_by(existing, publication)
    {
        return ConfigMapAction::Refuse(
            "ConfigMapConflict",
            format!(
                "ConfigMap {name} exists and is not managed by this JwksPublication; nothing is published or served until spec.configMapName names another ConfigMap or that one is deleted"
            ),
        );
    }
    let size = data_size(published);
    if size > CONFIG_MAP_DATA_LIMIT {
        return ConfigMapAction::Refuse(
            "TooLarge",
            format!(
                "the documents take {size} bytes, over the {CONFIG_MAP_DATA_LIMIT} a ConfigMap can hold; the ConfigMap keeps its previous content"
            ),
        );
    }
    let desired = build_config_map(publication, published);
    if existing.and_then(|cm| cm.data.as_ref()) == desired.data.as_ref() {
        ConfigMapAction::Unchanged
    } else {
        ConfigMapAction::Write(Box::new(desired))
    }
}

/// Whether `object` is controlled by `publication` (its controller owner reference).
pub fn controlled_by<K: Resource>(object: &K, publication: &JwksPublication) -> bool {
    let uid = publication.meta().uid.as_deref();
    uid.is_some()
        && object
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// What the status may claim is served: when the ConfigMap is up to date, what was assembled;
/// otherwise what the ConfigMap holds if it is this publication's (`TooLarge` keeps the previous
/// content), and nothing when it is someone else's or absent — a foreign ConfigMap's kids must
/// never count as published (G1).
pub fn served(
    publication: &JwksPublication,
    up_to_date: bool,
    existing: Option<&ConfigMap>,
    published: &Published,
    kids: &BTreeSet<String>,
) -> (Vec<String>, Option<String>) {
    if up_to_date {
        return (
            kids.iter().cloned().collect(),
            Some(strong_etag(published.jwks.as_bytes())),
        );
    }
    match existing.filter(|cm| controlled_by(*cm, publication)) {
        Some(ours) => (
            kids_in(ours),
            ours.data
                .as_ref()
                .and_then(|d| d.get(JWKS_KEY))
                .map(|jwks| strong_etag(jwks.as_bytes())),
        ),
        None => (Vec::new(), None),
    }
}

/// The kids in a ConfigMap's `jwks.json`.
pub fn kids_in(config_map: &ConfigMap) -> Vec<String> {
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(JWKS_KEY))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|set| {
            set["keys"].as_array().map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The server objects of that name that are someone else's, named for a condition message:
/// those are never applied over (G7), and the server is then not run at all.
pub fn server_conflict(
    publication: &JwksPublication,
    deployment: Option<&Deployment>,
    service: Option<&Service>,
) -> Option<String> {
    let name = object_name(publication);
    let foreign: Vec<String> = [
        deployment
            .filter(|d| !controlled_by(*d, publication))
            .map(|_| format!("Deployment {name}")),
        service
            .filter(|s| !controlled_by(*s, publication))
            .map(|_| format!("Service {name}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "{} exists and is not managed by this JwksPublication; the server is not run (the ConfigMap is published): set spec.configMapName to another name or delete it",
            foreign.join(" and ")
        )
    })
}

/// The objects among `objects` this publication controls that are no longer wanted: every one
/// not named `keep` (a former `configMapName`, or the server while it is not to run). As
/// `(name, uid)`, for a delete conditional on the UID.
pub fn unwanted<K: Resource>(
    publication: &JwksPublication,
    objects: &[K],
    keep: Option<&str>,
) -> Vec<(String, String)> {
    objects
        .iter()
        .filter(|o| controlled_by(*o, publication))
        .filter(|o| o.meta().name.as_deref() != keep)
        .filter_map(|o| Some((o.meta().name.clone()?, o.meta().uid.clone()?)))
        .collect()
}

/// The server: `jwks-operator serve` on the mounted ConfigMap, hardened to the "restricted"
/// Pod Security Standard.
/// How long a terminating server pod keeps accepting connections: until kube-proxy on every node
/// has stopped sending it new ones (about a second here; the usual preStop sleep is 5 s). Well
/// inside the default 30 s termination grace period, with the 10 s drain after it.
const SHUTDOWN_DELAY_SECONDS: &str = "5";

pub fn build_deployment(publication: &JwksPublication, image: &str) -> Deployment {
    let server = &publication.spec.server;
    let tls = server.tls_secret();
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    let mut args: Vec<String> = [
        "serve",
        "--dir",
        CONTENT_DIR,
        "--listen",
        &format!("0.0.0.0:{}", server.port),
        "--log-format",
        "json",
        "--shutdown-delay-seconds",
        SHUTDOWN_DELAY_SECONDS,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut mounts = vec![VolumeMount {
        name: "content".into(),
        mount_path: CONTENT_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "content".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: object_name(publication),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(secret) = tls {
        args.extend([
            "--tls-cert".into(),
            format!("{TLS_DIR}/tls.crt"),
            "--tls-key".into(),
            format!("{TLS_DIR}/tls.key"),
        ]);
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some(scheme.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let quantity = |q: &str| Quantity(q.into());
    let container = Container {
        name: "server".into(),
        image: Some(image.into()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: server.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("10m")),
                ("memory".into(), quantity("16Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("64Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SERVER_UID),
            run_as_group: Some(SERVER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(publication),
        spec: Some(DeploymentSpec {
            replicas: Some(server.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(publication)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(publication)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn build_service(publication: &JwksPublication) -> Service {
    let port = publication.spec.server.port;
    let name = if publication.spec.server.tls_secret().is_some() {
        "https"
    } else {
        "http"
    };
    Service {
        metadata: metadata(publication),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(publication)),
            ports: Some(vec![ServicePort {
                name: Some(name.into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where clients in the cluster fetch the JWKS from the server.
pub fn url(publication: &JwksPublication) -> String {
    let server = &publication.spec.server;
    let scheme = if server.tls_secret().is_some() {
        "https"
    } else {
        "http"
    };
    format!(
        "{scheme}://{}.{}.svc:{}{JWKS_PATH}",
        object_name(publication),
        publication.namespace().unwrap_or_default(),
        server.port
    )
}

/// What became of the server workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Server {
    /// `spec.server.enabled` is false.
    Disabled,
    /// Applied: available and desired replicas.
    Running { available: i32, desired: i32 },
    /// Enabled but not run, for this reason (a condition reason) and message.
    NotRun(&'static str, String),
}

/// The facts the status is made of.
pub struct Facts<'a> {
    pub publication: &'a JwksPublication,
    /// Kids in the ConfigMap now, with the etag of its `jwks.json`.
    pub served: &'a [String],
    pub etag: Option<String>,
    /// Why the ConfigMap could not be brought up to date, if it could not.
    pub publish_problem: Option<(&'static str, String)>,
    /// A spec value that cannot be used as written ([`spec_problem`]).
    pub spec_problem: Option<(&'static str, String)>,
    pub warnings: &'a [String],
    pub sources: usize,
    pub server: Server,
    pub now: Timestamp,
}

pub fn build_status(facts: &Facts<'_>) -> JwksPublicationStatus {
    let previous = facts.publication.status.clone().unwrap_or_default();
    let since: BTreeMap<&str, &PublishedKey> =
        previous.keys.iter().map(|k| (k.kid.as_str(), k)).collect();
    let keys: Vec<PublishedKey> = facts
        .served
        .iter()
        .map(|kid| match since.get(kid.as_str()) {
            Some(known) => (*known).clone(),
            // G1 counts from here: the first status that lists a kid is written only after the
            // ConfigMap holding it was.
            None => PublishedKey {
                kid: kid.clone(),
                published_at: MicroTime(facts.now),
            },
        })
        .collect();
    let published = match &facts.publish_problem {
        Some((reason, message)) => ("False", *reason, message.clone()),
        None if !facts.warnings.is_empty() => {
            ("True", "PublishedWithWarnings", facts.warnings.join("; "))
        }
        None => (
            "True",
            "UpToDate",
            format!(
                "{} key(s) from {} SigningKey(s) in ConfigMap {}",
                keys.len(),
                facts.sources,
                object_name(facts.publication)
            ),
        ),
    };
    let server = match &facts.server {
        Server::Disabled => (
            "False",
            "Disabled",
            "spec.server.enabled is false".to_owned(),
        ),
        Server::Running { available, desired } if *available > 0 => (
            "True",
            "Available",
            format!("{available}/{desired} replicas available"),
        ),
        Server::Running { desired, .. } => (
            "False",
            "Unavailable",
            format!("0/{desired} replicas available"),
        ),
        Server::NotRun(reason, message) => ("False", *reason, message.clone()),
    };
    let ready = if published.0 != "True" {
        ("False", published.1, published.2.clone())
    } else if let Some((reason, message)) = &facts.spec_problem {
        ("False", *reason, message.clone())
    } else if let Server::NotRun(reason, message) = &facts.server {
        ("False", *reason, message.clone())
    } else if keys.is_empty() {
        (
            "False",
            "NoKeys",
            "no SigningKey with a key selected by spec.selector and spec.use".to_owned(),
        )
    } else if matches!(facts.server, Server::Running { .. }) && server.0 != "True" {
        ("False", "ServerUnavailable", server.2.clone())
    } else {
        ("True", "Ready", format!("{} key(s) published", keys.len()))
    };
    let generation = facts.publication.metadata.generation;
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        crate::controller::conditions::condition(
            &previous.conditions,
            generation,
            facts.now,
            (type_, status, reason, message),
        )
    };
    JwksPublicationStatus {
        key_count: Some(i32::try_from(keys.len()).unwrap_or(i32::MAX)),
        keys,
        etag: facts.etag.clone(),
        url: matches!(facts.server, Server::Running { .. }).then(|| url(facts.publication)),
        conditions: vec![
            condition("Ready", ready),
            condition("Published", published),
            condition("ServerAvailable", server),
        ],
        observed_generation: generation,
    }
}

/// Condition reasons that call for a Warning event when they appear or their message changes.
const WARNING_REASONS: [&str; 6] = [
    "PublishedWithWarnings",
    "TooLarge",
    "ConfigMapConflict",
    "ServerConflict",
    "InvalidName",
    "InvalidSpec",
];

/// A Warning event for each problem the new conditions report that the previous ones did not
/// (same reason and message), once even when several conditions carry it.
pub fn warning_events(previous: &[Condition], current: &[Condition]) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    for condition in current {
        let reported_before = previous.iter().any(|p| {
            p.type_ == condition.type_
                && p.reason == condition.reason
                && p.message == condition.message
        });
        let repeated = events.iter().any(|e| {
            e.reason == condition.reason && e.note.as_deref() == Some(condition.message.as_str())
        });
        if WARNING_REASONS.contains(&condition.reason.as_str()) && !reported_before && !repeated {
            events.push(Event {
                type_: EventType::Warning,
                reason: condition.reason.clone(),
                note: Some(condition.message.clone()),
                action: "Publish".into(),
                secondary: None,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publication(server: serde_json::Value) -> JwksPublication {
        serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
            "metadata": {"name": "main", "namespace": "auth", "uid": "u-1", "generation": 3},
            "spec": {"selector": {}, "server": server},
        }))
        .unwrap()
    }

    fn named(name: &str, spec: serde_json::Value) -> JwksPublication {
        let mut spec = spec;
        spec["selector"] = json!({});
        serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
            "metadata": {"name": name, "namespace": "auth", "uid": "u-1", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    fn facts<'a>(
        publication: &'a JwksPublication,
        served: &'a [String],
        server: Server,
    ) -> Facts<'a> {
        Facts {
            publication,
            served,
            etag: Some("\"e\"".into()),
            publish_problem: None,
            spec_problem: None,
            warnings: &[],
            sources: 1,
            server,
            now: Timestamp::UNIX_EPOCH,
        }
    }

    fn condition_of<'a>(
        status: &'a JwksPublicationStatus,
        type_: &str,
    ) -> (&'a str, &'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    /// An object named `name`, controlled by the publication `uid` (or by nothing).
    fn object<K: Resource<DynamicType = ()> + Default>(name: &str, controller: Option<&str>) -> K {
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

    fn published(jwks: &str) -> Published {
        Published {
            jwks: jwks.into(),
            discovery: None,
            max_age_seconds: 300,
            jwks_path: crate::publication::JWKS_PATH.into(),
        }
    }

    #[test]
    fn config_map_is_written_only_when_its_content_changes() {
        let publication = publication(json!({}));
        let content = published(r#"{"keys":[]}"#);
        let ConfigMapAction::Write(desired) = plan_config_map(&publication, None, &content) else {
            panic!("a missing ConfigMap is written");
        };
        assert_eq!(
            plan_config_map(&publication, Some(&desired), &content),
            ConfigMapAction::Unchanged
        );
        let changed = published(r#"{"keys":[{"kid":"a"}]}"#);
        assert!(matches!(
            plan_config_map(&publication, Some(&desired), &changed),
            ConfigMapAction::Write(_)
        ));
    }

    #[test]
    fn a_config_map_of_someone_else_is_left_alone() {
        let publication = publication(json!({}));
        let foreign = ConfigMap {
            metadata: ObjectMeta {
                name: Some("main-jwks".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let action = plan_config_map(&publication, Some(&foreign), &published(r#"{"keys":[]}"#));
        assert!(
            matches!(action, ConfigMapAction::Refuse("ConfigMapConflict", _)),
            "{action:?}"
        );
    }

    #[test]
    fn content_over_the_object_limit_is_refused_never_truncated() {
        let publication = publication(json!({}));
        let huge = published(&format!(
            r#"{{"keys":[],"pad":"{}"}}"#,
            "x".repeat(CONFIG_MAP_DATA_LIMIT)
        ));
        let action = plan_config_map(&publication, None, &huge);
        let ConfigMapAction::Refuse("TooLarge", message) = action else {
            panic!("{action:?}")
        };
        assert!(message.contains("keeps its previous content"), "{message}");

        let status = build_status(&Facts {
            publication: &publication,
            served: &["old-kid".to_string()],
            etag: Some("\"old\"".into()),
            publish_problem: Some(("TooLarge", message)),
            spec_problem: None,
            warnings: &[],
            sources: 1,
            server: Server::Disabled,
            now: Timestamp::UNIX_EPOCH,
        });
        let published = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Published")
            .unwrap();
        assert_eq!(
            (published.status.as_str(), published.reason.as_str()),
            ("False", "TooLarge")
        );
        assert_eq!(
            status.keys[0].kid, "old-kid",
            "the status lists what is still served"
        );
        assert_eq!(status.conditions[0].status, "False");
    }

    #[test]
    fn status_keeps_first_publication_times_and_dates_new_kids_now() {
        let mut publication = publication(json!({"enabled": false}));
        publication.status = Some(JwksPublicationStatus {
            keys: vec![PublishedKey {
                kid: "a".into(),
                published_at: MicroTime(Timestamp::UNIX_EPOCH),
            }],
            ..JwksPublicationStatus::default()
        });
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let status = build_status(&Facts {
            publication: &publication,
            served: &["a".to_string(), "b".to_string()],
            etag: Some("\"e\"".into()),
            publish_problem: None,
            spec_problem: None,
            warnings: &[],
            sources: 1,
            server: Server::Disabled,
            now,
        });
        assert_eq!(status.keys[0].published_at.0, Timestamp::UNIX_EPOCH);
        assert_eq!(status.keys[1].published_at.0, now);
        assert_eq!(status.key_count, Some(2));
        assert_eq!(status.url, None, "no server, no URL");
        assert_eq!(status.observed_generation, Some(3));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn server_runs_serve_on_the_mounted_config_map_hardened() {
        let publication =
            publication(json!({"port": 8443, "replicas": 3, "tlsSecretName": "jwks-tls"}));
        let deployment = build_deployment(&publication, "example/jwks-operator:1");
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap().join(" ");
        assert_eq!(
            args,
            "serve --dir /etc/jwks --listen 0.0.0.0:8443 --log-format json --shutdown-delay-seconds 5 --tls-cert /etc/jwks-tls/tls.crt --tls-key /etc/jwks-tls/tls.key"
        );
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (probe.path.as_deref(), probe.scheme.as_deref()),
            (Some("/readyz"), Some("HTTPS"))
        );
        assert_eq!(deployment.metadata.owner_references.unwrap()[0].uid, "u-1");
        assert_eq!(
            url(&publication),
            "https://main-jwks.auth.svc:8443/.well-known/jwks.json"
        );
    }

    #[test]
    fn server_names_must_be_dns_1035_labels_while_the_server_runs() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let cases = [
            // (metadata.name, spec, problem expected, ConfigMap unusable too)
            ("main", json!({}), false, false),
            ("main", json!({"configMapName": "jwks-1"}), false, false),
            ("main", json!({"configMapName": long}), false, false),
            ("main", json!({"configMapName": too_long}), true, false),
            ("main", json!({"configMapName": "a.b"}), true, false),
            ("main", json!({"configMapName": "1jwks"}), true, false),
            (
                "main",
                json!({"configMapName": "a.b", "server": {"enabled": false}}),
                false,
                false,
            ),
            ("a.b", json!({}), true, false),
            ("a.b", json!({"server": {"enabled": false}}), false, false),
            ("main", json!({"configMapName": "Main"}), true, true),
            (
                "main",
                json!({"configMapName": "a..b", "server": {"enabled": false}}),
                true,
                true,
            ),
            (
                &"a".repeat(250),
                json!({"server": {"enabled": false}}),
                true,
                true,
            ),
        ];
        for (name, spec, expected, config_map) in cases {
            let problem = check_name(&named(name, spec.clone()));
            assert_eq!(problem.is_some(), expected, "{name} {spec}: {problem:?}");
            if let Some(problem) = problem {
                assert_eq!(problem.config_map, config_map, "{name} {spec}");
            }
        }
        let explicit = check_name(&named("main", json!({"configMapName": "a.b"}))).unwrap();
        assert!(
            explicit
                .message
                .starts_with("spec.configMapName \"a.b\" cannot name the server's Service"),
            "{}",
            explicit.message
        );
        let default = check_name(&named("a.b", json!({}))).unwrap();
        assert!(
            default.message.contains("the default name \"a.b-jwks\""),
            "{}",
            default.message
        );
    }

    #[test]
    fn a_server_that_cannot_be_named_is_a_condition_and_publishes_no_url() {
        let publication = named("a.b", json!({}));
        let message = check_name(&publication).unwrap().message;
        let served = ["k".to_string()];
        let status = build_status(&facts(
            &publication,
            &served,
            Server::NotRun("InvalidName", message.clone()),
        ));
        assert_eq!(
            condition_of(&status, "Published").0,
            "True",
            "the ConfigMap is published"
        );
        assert_eq!(
            condition_of(&status, "ServerAvailable"),
            ("False", "InvalidName", message.as_str())
        );
        assert_eq!(
            condition_of(&status, "Ready"),
            ("False", "InvalidName", message.as_str())
        );
        assert_eq!(status.url, None);
        assert_eq!(status.keys.len(), 1);

        let running = build_status(&facts(
            &publication,
            &served,
            Server::Running {
                available: 1,
                desired: 2,
            },
        ));
        assert_eq!(
            running.url.as_deref(),
            Some("http://a.b-jwks.auth.svc:8080/.well-known/jwks.json")
        );
        assert_eq!(condition_of(&running, "Ready").1, "Ready");
    }

    #[test]
    fn an_invalid_cache_max_age_is_a_condition_not_a_silent_default() {
        assert_eq!(
            spec_problem(&named("main", json!({"cacheMaxAge": "24h"}))),
            None
        );
        for invalid in ["25h", "soon", ""] {
            let publication = named("main", json!({"cacheMaxAge": invalid}));
            let (reason, message) = spec_problem(&publication).unwrap();
            assert_eq!(reason, "InvalidSpec");
            assert!(
                message.starts_with("spec.cacheMaxAge: ") && message.contains("300s"),
                "{message}"
            );
            let served = ["k".to_string()];
            let mut facts = facts(&publication, &served, Server::Disabled);
            facts.spec_problem = Some((reason, message.clone()));
            let status = build_status(&facts);
            assert_eq!(
                condition_of(&status, "Ready"),
                ("False", "InvalidSpec", message.as_str())
            );
            assert_eq!(condition_of(&status, "Published").0, "True");
        }
    }

    #[test]
    fn a_foreign_config_map_is_never_reported_as_served() {
        let publication = publication(json!({}));
        let content = published(r#"{"keys":[{"kid":"new"}]}"#);
        let kids = BTreeSet::from(["new".to_string()]);
        let with_kid = |controller: Option<&str>| {
            let mut cm: ConfigMap = object("main-jwks", controller);
            cm.data = Some(BTreeMap::from([(
                JWKS_KEY.into(),
                r#"{"keys":[{"kid":"old"}]}"#.into(),
            )]));
            cm
        };
        let foreign = with_kid(None);
        assert_eq!(
            served(&publication, false, Some(&foreign), &content, &kids),
            (vec![], None)
        );
        let other_publication = with_kid(Some("u-2"));
        assert_eq!(
            served(
                &publication,
                false,
                Some(&other_publication),
                &content,
                &kids
            ),
            (vec![], None)
        );
        assert_eq!(
            served(&publication, false, None, &content, &kids),
            (vec![], None)
        );

        let ours = with_kid(Some("u-1"));
        let (kids_now, etag) = served(&publication, false, Some(&ours), &content, &kids);
        assert_eq!(
            kids_now,
            ["old"],
            "TooLarge: the ConfigMap keeps (and serves) its previous content"
        );
        assert_eq!(etag, Some(strong_etag(br#"{"keys":[{"kid":"old"}]}"#)));
        let (kids_now, etag) = served(&publication, true, Some(&ours), &content, &kids);
        assert_eq!(kids_now, ["new"]);
        assert_eq!(etag, Some(strong_etag(content.jwks.as_bytes())));
    }

    #[test]
    fn foreign_server_objects_are_a_conflict_naming_them() {
        let publication = publication(json!({}));
        let ours_d: Deployment = object("main-jwks", Some("u-1"));
        let ours_s: Service = object("main-jwks", Some("u-1"));
        let foreign_s: Service = object("main-jwks", None);
        let other_d: Deployment = object("main-jwks", Some("u-2"));
        assert_eq!(server_conflict(&publication, None, None), None);
        assert_eq!(
            server_conflict(&publication, Some(&ours_d), Some(&ours_s)),
            None
        );
        let message = server_conflict(&publication, Some(&ours_d), Some(&foreign_s)).unwrap();
        assert!(
            message.starts_with("Service main-jwks exists and is not managed"),
            "{message}"
        );
        let message = server_conflict(&publication, Some(&other_d), Some(&foreign_s)).unwrap();
        assert!(
            message.starts_with("Deployment main-jwks and Service main-jwks"),
            "{message}"
        );
    }

    #[test]
    fn only_owned_objects_under_another_name_are_unwanted() {
        let publication = publication(json!({}));
        let objects: Vec<ConfigMap> = vec![
            object("old-jwks", Some("u-1")),
            object("main-jwks", Some("u-1")),
            object("foreign", None),
            object("other-publication", Some("u-2")),
        ];
        assert_eq!(
            unwanted(&publication, &objects, Some("main-jwks")),
            [("old-jwks".to_string(), "uid-of-old-jwks".to_string())]
        );
        let all_ours: Vec<&str> = unwanted(&publication, &objects, None)
            .iter()
            .map(|(n, _)| n.as_str())
            .map(|n| {
                if n == "old-jwks" {
                    "old-jwks"
                } else {
                    "main-jwks"
                }
            })
            .collect();
        assert_eq!(all_ours, ["old-jwks", "main-jwks"]);
        let mut no_uid = publication.clone();
        no_uid.metadata.uid = None;
        assert!(
            unwanted(&no_uid, &objects, None).is_empty(),
            "no UID, nothing proven ours"
        );
    }

    #[test]
    fn an_empty_tls_secret_name_serves_plain_http() {
        let publication = publication(json!({"tlsSecretName": ""}));
        let deployment = build_deployment(&publication, "example/jwks-operator:1");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert!(
            !container
                .args
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a.starts_with("--tls"))
        );
        assert_eq!(pod.volumes.unwrap().len(), 1, "the ConfigMap only");
        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.scheme.as_deref(), Some("HTTP"));
        let service = build_service(&publication).spec.unwrap();
        assert_eq!(service.ports.unwrap()[0].name.as_deref(), Some("http"));
        assert_eq!(
            url(&publication),
            "http://main-jwks.auth.svc:8080/.well-known/jwks.json"
        );
    }

    #[test]
    fn each_new_problem_is_evented_once() {
        let at = |type_: &str, reason: &str, message: &str| {
            crate::controller::conditions::condition(
                &[],
                Some(1),
                Timestamp::UNIX_EPOCH,
                (type_, "False", reason, message.into()),
            )
        };
        let current = [
            at("Ready", "InvalidName", "m"),
            at("Published", "UpToDate", "fine"),
            at("ServerAvailable", "InvalidName", "m"),
        ];
        let events = warning_events(&[], &current);
        assert_eq!(events.len(), 1, "one event for the same problem");
        assert_eq!(
            (events[0].reason.as_str(), events[0].note.as_deref()),
            ("InvalidName", Some("m"))
        );
        assert!(matches!(events[0].type_, EventType::Warning));
        assert!(
            warning_events(&current, &current).is_empty(),
            "reported already"
        );
        let changed = [at("ServerAvailable", "InvalidName", "other")];
        assert_eq!(
            warning_events(&current, &changed).len(),
            1,
            "a new message is new"
        );
        let fine = [
            at("ServerAvailable", "Unavailable", "0/2"),
            at("Ready", "NoKeys", "none"),
        ];
        assert!(warning_events(&[], &fine).is_empty());
    }

    #[test]
    fn long_publication_names_still_give_valid_labels() {
        let short = named("main", json!({}));
        assert_eq!(labels(&short)[PUBLICATION_NAME_LABEL], "main");
        let name = format!("{}.{}", "a".repeat(39), "b".repeat(100));
        let long = named(&name, json!({"configMapName": "jwks"}));
        for value in labels(&long)
            .values()
            .chain(selector_labels(&long).values())
        {
            assert!(value.len() <= 63, "{value}");
            assert!(
                value.starts_with(|c: char| c.is_ascii_alphanumeric()),
                "{value}"
            );
            assert!(
                value.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{value}"
            );
        }
        let other = named(
            &format!("{}.{}", "a".repeat(39), "c".repeat(100)),
            json!({}),
        );
        assert_ne!(
            labels(&long)[PUBLICATION_NAME_LABEL],
            labels(&other)[PUBLICATION_NAME_LABEL]
        );
        assert!(owned_selector(&long).ends_with(&labels(&long)[PUBLICATION_NAME_LABEL]));
    }
}
