//! The server workload: the Deployment running `jwks-operator serve` on the mounted ConfigMap,
//! its Service, and what keeps it from running.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::JwksPublication;
use crate::api::conditions::PublicationReason;
use crate::publication::jwks_path;

use super::naming::{controlled_by, labels, metadata, object_name, selector_labels};

/// Where the server container reads the mounted ConfigMap and TLS Secret.
const CONTENT_DIR: &str = "/etc/jwks";
const TLS_DIR: &str = "/etc/jwks-tls";
/// The image's unprivileged user (distroless `nonroot`).
const SERVER_UID: i64 = 65532;

/// How long a terminating server pod keeps accepting connections: until kube-proxy on every node
/// has stopped sending it new ones (about a second here; the usual preStop sleep is 5 s). Well
/// inside the default 30 s termination grace period, with the 10 s drain after it.
const SHUTDOWN_DELAY_SECONDS: &str = "5";

/// The server: `jwks-operator serve` on the mounted ConfigMap, hardened to the "restricted"
/// Pod Security Standard.
pub fn build_deployment(publication: &JwksPublication, image: &str) -> Deployment {
    Deployment {
        metadata: metadata(publication),
        spec: Some(DeploymentSpec {
            replicas: Some(publication.spec.server.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(publication)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(publication)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(publication, image)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod_spec(publication: &JwksPublication, image: &str) -> PodSpec {
    let (volumes, mounts) = volumes(publication);
    PodSpec {
        containers: vec![container(publication, image, mounts)],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

/// The ConfigMap's volume, and the TLS Secret's when the server has one, with their mounts.
fn volumes(publication: &JwksPublication) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![mount("content", CONTENT_DIR)];
    let mut volumes = vec![Volume {
        name: "content".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: object_name(publication),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(secret) = publication.spec.server.tls_secret() {
        mounts.push(mount("tls", TLS_DIR));
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    (volumes, mounts)
}

fn container(publication: &JwksPublication, image: &str, mounts: Vec<VolumeMount>) -> Container {
    let server = &publication.spec.server;
    // An HTTPGetAction's scheme is upper case.
    let scheme = scheme(publication).to_ascii_uppercase();
    let quantity = |q: &str| Quantity(q.into());
    Container {
        name: "server".into(),
        image: Some(image.into()),
        args: Some(args(publication)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: server.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5, &scheme)),
        liveness_probe: Some(probe("/healthz", 10, &scheme)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("10m")),
                ("memory".into(), quantity("16Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("64Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// `serve` on the mounted ConfigMap, with the TLS pair when the server has one.
fn args(publication: &JwksPublication) -> Vec<String> {
    let server = &publication.spec.server;
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
    if server.tls_secret().is_some() {
        args.extend([
            "--tls-cert".into(),
            format!("{TLS_DIR}/tls.crt"),
            "--tls-key".into(),
            format!("{TLS_DIR}/tls.key"),
        ]);
    }
    args
}

fn probe(path: &str, period: i32, scheme: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some(scheme.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(SERVER_UID),
        run_as_group: Some(SERVER_UID),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

pub fn build_service(publication: &JwksPublication) -> Service {
    let port = publication.spec.server.port;
    let name = scheme(publication);
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

/// Where clients in the cluster fetch the JWKS from the server (at the publication's
/// `jwksPath`).
pub fn url(publication: &JwksPublication) -> String {
    let server = &publication.spec.server;
    format!(
        "{}://{}.{}.svc:{}{}",
        scheme(publication),
        object_name(publication),
        publication.namespace().unwrap_or_default(),
        server.port,
        jwks_path(publication)
    )
}

/// `https` when the server has a TLS Secret, else `http`.
fn scheme(publication: &JwksPublication) -> &'static str {
    if publication.spec.server.tls_secret().is_some() {
        "https"
    } else {
        "http"
    }
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

/// What became of the server workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Server {
    /// `spec.server.enabled` is false.
    Disabled,
    /// Applied: available and desired replicas.
    Running { available: i32, desired: i32 },
    /// Enabled but not run, for this reason (a condition reason) and message.
    NotRun(PublicationReason, String),
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn readiness(container: &Container) -> &HTTPGetAction {
        let probe = container.readiness_probe.as_ref().unwrap();
        probe.http_get.as_ref().unwrap()
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
        let probe = readiness(container);
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
    fn the_url_follows_the_jwks_path() {
        let publication = named("main", json!({"jwksPath": "/openid/v1/jwks"}));
        assert_eq!(
            url(&publication),
            "http://main-jwks.auth.svc:8080/openid/v1/jwks"
        );
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
    fn an_empty_tls_secret_name_serves_plain_http() {
        let publication = publication(json!({"tlsSecretName": ""}));
        let deployment = build_deployment(&publication, "example/jwks-operator:1");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let args = container.args.as_deref().unwrap_or_default();
        assert!(!args.iter().any(|a| a.starts_with("--tls")), "{args:?}");
        assert_eq!(pod.volumes.unwrap().len(), 1, "the ConfigMap only");
        let probe = readiness(container);
        assert_eq!(probe.scheme.as_deref(), Some("HTTP"));
        let service = build_service(&publication).spec.unwrap();
        assert_eq!(service.ports.unwrap()[0].name.as_deref(), Some("http"));
        assert_eq!(
            url(&publication),
            "http://main-jwks.auth.svc:8080/.well-known/jwks.json"
        );
    }
}
