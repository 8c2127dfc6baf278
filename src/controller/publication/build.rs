//! The objects a JwksPublication owns and the status it reports, as pure functions of the
//! publication and what was assembled.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::{JwksPublication, JwksPublicationStatus, PublishedKey};
use crate::publication::{JWKS_PATH, Published};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "jwks-operator";
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
        (PUBLICATION_NAME_LABEL.into(), publication.name_any()),
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), publication.name_any()),
    ])
}

fn selector_labels(publication: &JwksPublication) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), publication.name_any()),
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
                "ConfigMap {name} exists and is not managed by this JwksPublication; set spec.configMapName to another name or delete it"
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
    object
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// The server: `jwks-operator serve` on the mounted ConfigMap, hardened to the "restricted"
/// Pod Security Standard.
pub fn build_deployment(publication: &JwksPublication, image: &str) -> Deployment {
    let server = &publication.spec.server;
    let tls = server.tls_secret_name.as_ref();
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    let mut args: Vec<String> = [
        "serve",
        "--dir",
        CONTENT_DIR,
        "--listen",
        &format!("0.0.0.0:{}", server.port),
        "--log-format",
        "json",
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
                secret_name: Some(secret.clone()),
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
    let name = if publication.spec.server.tls_secret_name.is_some() {
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

/// Where clients in the cluster fetch the JWKS, when the server runs.
pub fn url(publication: &JwksPublication) -> Option<String> {
    let server = &publication.spec.server;
    server.enabled.then(|| {
        let scheme = if server.tls_secret_name.is_some() {
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
    })
}

/// The facts the status is made of.
pub struct Facts<'a> {
    pub publication: &'a JwksPublication,
    /// Kids in the ConfigMap now, with the etag of its `jwks.json`.
    pub served: &'a [String],
    pub etag: Option<String>,
    /// Why the ConfigMap could not be brought up to date, if it could not.
    pub publish_problem: Option<(&'static str, String)>,
    pub warnings: &'a [String],
    pub sources: usize,
    /// `None`: server disabled; else available and desired replicas.
    pub server: Option<(i32, i32)>,
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
    let server = match facts.server {
        None => (
            "False",
            "Disabled",
            "spec.server.enabled is false".to_owned(),
        ),
        Some((available, desired)) if available > 0 => (
            "True",
            "Available",
            format!("{available}/{desired} replicas available"),
        ),
        Some((_, desired)) => (
            "False",
            "Unavailable",
            format!("0/{desired} replicas available"),
        ),
    };
    let ready = if published.0 != "True" {
        ("False", published.1, published.2.clone())
    } else if keys.is_empty() {
        (
            "False",
            "NoKeys",
            "no SigningKey with a key selected by spec.selector and spec.use".to_owned(),
        )
    } else if facts.server.is_some() && server.0 != "True" {
        ("False", "ServerUnavailable", server.2.clone())
    } else {
        ("True", "Ready", format!("{} key(s) published", keys.len()))
    };
    let generation = facts.publication.metadata.generation;
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        super::super::condition(
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
        url: url(facts.publication),
        conditions: vec![
            condition("Ready", ready),
            condition("Published", published),
            condition("ServerAvailable", server),
        ],
        observed_generation: generation,
    }
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

    fn published(jwks: &str) -> Published {
        Published {
            jwks: jwks.into(),
            discovery: None,
            max_age_seconds: 300,
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
            warnings: &[],
            sources: 1,
            server: None,
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
            warnings: &[],
            sources: 1,
            server: None,
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
            "serve --dir /etc/jwks --listen 0.0.0.0:8443 --log-format json --tls-cert /etc/jwks-tls/tls.crt --tls-key /etc/jwks-tls/tls.key"
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
            url(&publication).as_deref(),
            Some("https://main-jwks.auth.svc:8443/.well-known/jwks.json")
        );
    }
}
