//! JwksPublications: what they publish, when the ConfigMap changes, the server workload, and
//! the end-to-end G1 gate with the real publication controller.

use jwks_operator::api::{JwksPublication, JwksPublicationStatus, KeyState};
use jwks_operator::jose;
use jwks_operator::publication::strong_etag;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::support::{self, TIMEOUT, wait_for};
use super::*;

impl World {
    pub fn publications(&self) -> Api<JwksPublication> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub async fn create_publication(&self, name: &str, spec: Value) -> JwksPublication {
        let publication = serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.publications()
            .create(&PostParams::default(), &publication)
            .await
            .unwrap()
    }

    pub async fn wait_publication(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&JwksPublicationStatus) -> bool + Send + 'static,
    ) -> JwksPublicationStatus {
        let condition = move |p: Option<&JwksPublication>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(&check)
        };
        let publication = support::wait_until(&self.publications(), name, TIMEOUT, what, condition)
            .await
            .unwrap();
        publication.status.unwrap()
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }
}

fn publication_condition<'a>(
    status: &'a JwksPublicationStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn kids(status: &JwksPublicationStatus) -> Vec<String> {
    status.keys.iter().map(|k| k.kid.clone()).collect()
}

/// The kids every selected SigningKey lists, sorted.
async fn status_kids(world: &World, names: &[&str]) -> Vec<String> {
    let mut kids = Vec::new();
    for name in names {
        let key = world.keys.get(name).await.unwrap();
        kids.extend(key.status.unwrap().keys.into_iter().map(|k| k.kid));
    }
    kids.sort();
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_serves_exactly_the_selected_keys_in_a_canonical_config_map() {
    let world = World::new().await;
    let main = json!({"jwks-operator.io/publication": "main"});
    world
        .create_key("es", main.clone(), json!({"algorithm": "ES256"}))
        .await;
    world
        .create_key(
            "rs",
            main.clone(),
            json!({"algorithm": "RS256", "certificate": {"commonName": "rs.example"}}),
        )
        .await;
    world
        .create_key("enc", main.clone(), json!({"algorithm": "ECDH-ES+A128KW"}))
        .await;
    world
        .create_key(
            "other",
            json!({"jwks-operator.io/publication": "other"}),
            json!({"algorithm": "EdDSA"}),
        )
        .await;
    for name in ["es", "rs", "enc", "other"] {
        world
            .wait_status(name, "a key", |s| active(s).is_some())
            .await;
    }
    world
        .create_publication(
            "main",
            json!({"selector": {"matchLabels": main}, "issuer": "https://auth.example.com"}),
        )
        .await;

    let expected = status_kids(&world, &["es", "rs"]).await;
    let wanted = expected.clone();
    let status = world
        .wait_publication("main", "the signing keys published", move |s| {
            kids(s) == wanted
        })
        .await;
    let cm = world.config_maps().get("main-jwks").await.unwrap();
    let data = cm.data.unwrap();
    let jwks = &data["jwks.json"];
    assert_eq!(
        status.etag.as_deref(),
        Some(strong_etag(jwks.as_bytes()).as_str())
    );
    assert_eq!(status.key_count, Some(2));
    assert_eq!(
        status.url.as_deref(),
        Some(
            format!(
                "http://main-jwks.{}.svc:8080/.well-known/jwks.json",
                world.ns.name
            )
            .as_str()
        )
    );
    let findings = jose::lint::lint(
        jwks.as_bytes(),
        jose::lint::LintOptions {
            thumbprint_kids: true,
        },
    );
    assert!(findings.is_empty(), "{findings:?}");
    let set: Value = serde_json::from_str(jwks).unwrap();
    let listed: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected, "sorted by kid, signing keys only");
    assert_eq!(
        jose::canonical_json(&set).unwrap(),
        *jwks,
        "canonical bytes"
    );
    let discovery: Value = serde_json::from_str(&data["openid-configuration"]).unwrap();
    assert_eq!(
        discovery["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256", "RS256"])
    );
    assert_eq!(data["cache-max-age"], "300");
    assert_eq!(
        publication_condition(&status, "Published").unwrap().status,
        "True"
    );
    // No kubelet runs here: the Deployment exists but no replica becomes available.
    let server = publication_condition(&status, "ServerAvailable").unwrap();
    assert_eq!(
        (server.status.as_str(), server.reason.as_str()),
        ("False", "Unavailable")
    );
    let deployment: Api<Deployment> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let deployment = deployment.get("main-jwks").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    let service: Api<Service> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    assert_eq!(
        service
            .get("main-jwks")
            .await
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap()[0]
            .port,
        8080
    );
    assert!(
        world
            .events_about("main")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("JwksUpdated"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_follows_keys_that_appear_leave_or_are_relabelled_and_is_otherwise_untouched() {
    let world = World::new().await;
    let main = json!({"jwks-operator.io/publication": "main"});
    world
        .create_publication(
            "main",
            json!({"selector": {"matchLabels": main}, "server": {"enabled": false}}),
        )
        .await;
    world
        .create_key("a", main.clone(), json!({"algorithm": "ES256"}))
        .await;
    let a = world.active_kid("a").await;
    let a_kid = a.clone();
    let first = world
        .wait_publication("main", "a published", move |s| kids(s) == [a_kid.clone()])
        .await;
    let since = first.keys[0].published_at.clone();
    let version = world
        .config_maps()
        .get("main-jwks")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // Unrelated changes: the publication and a key are touched, the content stays the same.
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    world
        .publications()
        .patch("main", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    world
        .keys
        .patch("a", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    world
        .create_key("b", main.clone(), json!({"algorithm": "EdDSA"}))
        .await;
    let b = world.active_kid("b").await;
    let both = world
        .wait_publication("main", "b published too", |s| s.keys.len() == 2)
        .await;
    assert_eq!(
        both.keys.iter().find(|k| k.kid == a).unwrap().published_at,
        since,
        "a's first publication time is kept"
    );
    let after_b = world
        .config_maps()
        .get("main-jwks")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_ne!(after_b, version);

    // Relabelled out: b leaves; back in: b returns with a new first-publication time.
    let relabel =
        |value: &str| json!({"metadata": {"labels": {"jwks-operator.io/publication": value}}});
    world
        .keys
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(&relabel("other")),
        )
        .await
        .unwrap();
    let a_kid = a.clone();
    world
        .wait_publication("main", "b withdrawn", move |s| kids(s) == [a_kid.clone()])
        .await;
    let note = wait_for(TIMEOUT, "the JwksUpdated event naming b", || async {
        world
            .events_about("main")
            .await
            .into_iter()
            .filter_map(|e| e.note)
            .find(|n| n.contains(&format!("removed: {b}")))
            .ok_or_else(|| "not yet".into())
    })
    .await;
    assert!(note.contains("1 key(s) published"), "{note}");

    world
        .keys
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    world
        .wait_publication("main", "a withdrawn with its SigningKey", |s| {
            s.keys.is_empty()
        })
        .await;
    let empty = world
        .config_maps()
        .get("main-jwks")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(empty["jwks.json"], r#"{"keys":[]}"#);
    let status = world
        .publications()
        .get("main")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        publication_condition(&status, "Ready").unwrap().reason,
        "NoKeys"
    );

    let unchanged = world
        .config_maps()
        .get("main-jwks")
        .await
        .unwrap()
        .metadata
        .resource_version;
    world
        .publications()
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"example.com/again": "1"}}})),
        )
        .await
        .unwrap();
    wait_for(TIMEOUT, "the publication reconciled", || async {
        let p = world
            .publications()
            .get("main")
            .await
            .map_err(|e| e.to_string())?;
        let seen = p.status.and_then(|s| s.observed_generation) == p.metadata.generation;
        if seen { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    assert_eq!(
        world
            .config_maps()
            .get("main-jwks")
            .await
            .unwrap()
            .metadata
            .resource_version,
        unchanged,
        "no write without a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_published_before_the_new_key_signs() {
    let world = World::new().await;
    let main = json!({"jwks-operator.io/publication": "main"});
    world.create_publication("main", json!({"selector": {"matchLabels": main}, "server": {"enabled": false}, "cacheMaxAge": "1s"})).await;
    world
        .create_key("rotating", main, rotating("ES256", "4s", "2s", "2s"))
        .await;
    let first = world
        .wait_status("rotating", "a key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().kid.clone();
    let k1_kid = k1.clone();
    let done = world
        .wait_status(
            "rotating",
            "a successor active and the first key removed",
            move |s| active(s).is_some_and(|a| a.kid != k1_kid) && state_of(s, &k1_kid).is_none(),
        )
        .await;
    let k2 = active(&done).unwrap().clone();
    let k2_kid = k2.kid.clone();
    let k1_kid = k1.clone();
    let publication = world
        .wait_publication("main", "k1 withdrawn", move |s| {
            kids(s).contains(&k2_kid) && !kids(s).contains(&k1_kid)
        })
        .await;
    let published_at = publication
        .keys
        .iter()
        .find(|k| k.kid == k2.kid)
        .unwrap()
        .published_at
        .0;
    let activated_at = k2.activated_at.unwrap().0;
    assert!(
        activated_at >= published_at + secs(2),
        "G1 end to end: published {published_at}, active {activated_at}"
    );
    assert_eq!(k2.state, KeyState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_server_removes_it_and_deleting_the_publication_removes_everything() {
    let world = World::new().await;
    let main = json!({"jwks-operator.io/publication": "main"});
    world
        .create_key("k", main.clone(), json!({"algorithm": "ES256"}))
        .await;
    world
        .create_publication(
            "main",
            json!({"selector": {"matchLabels": main}, "server": {"port": 9000}}),
        )
        .await;
    let deployments: Api<Deployment> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let services: Api<Service> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    wait_for(TIMEOUT, "the server Deployment", || async {
        deployments
            .get_opt("main-jwks")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".into())
    })
    .await;

    let disable = json!({"spec": {"server": {"enabled": false}}});
    world
        .publications()
        .patch("main", &PatchParams::default(), &Patch::Merge(&disable))
        .await
        .unwrap();
    let status = world
        .wait_publication("main", "the server disabled", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "ServerAvailable" && c.reason == "Disabled")
        })
        .await;
    assert_eq!(status.url, None);
    assert_eq!(
        publication_condition(&status, "Ready").unwrap().status,
        "True",
        "the ConfigMap is the product"
    );
    for what in ["Deployment", "Service"] {
        wait_for(TIMEOUT, &format!("the {what} removed"), || async {
            let gone = match what {
                "Deployment" => deployments
                    .get_opt("main-jwks")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none(),
                _ => services
                    .get_opt("main-jwks")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none(),
            };
            if gone {
                Ok(())
            } else {
                Err("still there".into())
            }
        })
        .await;
    }

    world
        .publications()
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(TIMEOUT, "the ConfigMap garbage-collected", || async {
        let gone = world
            .config_maps()
            .get_opt("main-jwks")
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        if gone {
            Ok(())
        } else {
            Err("still there".into())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_max_age_longer_than_pre_publish_is_warned() {
    let world = World::new().await;
    let main = json!({"jwks-operator.io/publication": "main"});
    world
        .create_key(
            "k",
            main.clone(),
            json!({"algorithm": "ES256", "rotation": {"prePublish": "2m"}}),
        )
        .await;
    world
        .create_publication("main", json!({"selector": {"matchLabels": main}, "server": {"enabled": false}, "cacheMaxAge": "10m"}))
        .await;
    let status = world
        .wait_publication("main", "the warning", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Published" && c.reason == "PublishedWithWarnings")
        })
        .await;
    let message = &publication_condition(&status, "Published").unwrap().message;
    assert!(
        message.contains("cacheMaxAge 600s exceeds") && message.contains("120s"),
        "{message}"
    );
    let note = world.wait_event("main", "PublishedWithWarnings").await;
    assert!(note.contains("cacheMaxAge"), "{note}");
}

/// The server's pod template is admitted where the "restricted" Pod Security Standard is
/// enforced (and a pod that is not is refused there, so the check is live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pod_template_passes_the_restricted_pod_security_standard() {
    let world = World::new().await;
    let namespaces: Api<Namespace> = Api::all(world.ns.client.clone());
    let restricted =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    namespaces
        .patch(
            &world.ns.name,
            &PatchParams::default(),
            &Patch::Merge(&restricted),
        )
        .await
        .unwrap();
    world
        .create_publication(
            "main",
            json!({"selector": {}, "server": {"tlsSecretName": "jwks-tls"}}),
        )
        .await;
    let deployments: Api<Deployment> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let deployment = wait_for(TIMEOUT, "the server Deployment", || async {
        deployments
            .get_opt("main-jwks")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".into())
    })
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    wait_for(TIMEOUT, "the default ServiceAccount", || async {
        accounts
            .get_opt("default")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".into())
    })
    .await;

    let template = deployment.spec.unwrap().template;
    let pods: Api<Pod> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("server-template".into()),
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Pod::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the server pod is admitted under restricted");

    let mut weakened = template.spec.unwrap();
    weakened.containers[0].security_context = None;
    weakened.security_context = None;
    let refused = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("weakened".into()),
            ..Default::default()
        },
        spec: Some(weakened),
        ..Pod::default()
    };
    let error = pods
        .create(&PostParams::default(), &refused)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("restricted"), "{error}");
}
