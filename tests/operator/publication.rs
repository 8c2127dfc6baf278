//! JwksPublications: what they publish, when the ConfigMap changes, the server workload, and
//! the end-to-end G1 gate with the real publication controller.

use jwks_operator::api::{JwksPublication, JwksPublicationStatus, KeyState};
use jwks_operator::controller::publication::WRITE_INTERVAL;
use jwks_operator::jose;
use jwks_operator::publication::strong_etag;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::support::{self, TIMEOUT, foreign_deployment, foreign_service, wait_for};
use super::*;

impl World {
    pub fn publications(&self) -> Api<JwksPublication> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub async fn create_publication(&self, name: &str, spec: Value) -> JwksPublication {
        let publication = PublicationBuilder::new(name).spec(spec).build();
        support::create(&self.publications(), &publication).await
    }

    /// Creates the publication "main", selecting the keys labelled [`in_main`], with `spec`
    /// (a JSON object) on top.
    pub async fn create_main_publication(&self, spec: Value) -> JwksPublication {
        let main = PublicationBuilder::new("main")
            .publication_label("main")
            .spec(spec);
        support::create(&self.publications(), &main.build()).await
    }

    /// Waits until the publication lists exactly the kids `expected`, in order.
    pub async fn wait_kids(
        &self,
        name: &str,
        what: &str,
        expected: Vec<String>,
    ) -> JwksPublicationStatus {
        self.wait_publication(name, what, move |s| kids(s) == expected)
            .await
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

    /// The stored status of the publication `name`.
    pub async fn publication_status(&self, name: &str) -> JwksPublicationStatus {
        let publication = self.publications().get(name).await.unwrap();
        publication.status.unwrap()
    }

    /// The resourceVersion of the ConfigMap `name` as stored now.
    pub async fn config_map_version(&self, name: &str) -> Option<String> {
        let config_map = self.config_maps().get(name).await.unwrap();
        config_map.metadata.resource_version
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    /// Waits until the publication's condition `type_` has `reason`; returns the status.
    pub async fn wait_reason(
        &self,
        name: &str,
        type_: &'static str,
        reason: &'static str,
    ) -> JwksPublicationStatus {
        self.wait_publication(name, &format!("{type_} {reason}"), move |s| {
            publication_condition(s, type_).is_some_and(|c| c.reason == reason)
        })
        .await
    }
}

/// The kids in a ConfigMap's `jwks.json`.
fn kids_in(config_map: &ConfigMap) -> Vec<String> {
    let data = config_map.data.clone().unwrap_or_default();
    support::kids_in_jwks(&data["jwks.json"])
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
    let keys = [
        ("es", "main", json!({"algorithm": "ES256"})),
        (
            "rs",
            "main",
            json!({"algorithm": "RS256", "certificate": {"commonName": "rs.example"}}),
        ),
        ("enc", "main", json!({"algorithm": "ECDH-ES+A128KW"})),
        ("other", "other", json!({"algorithm": "EdDSA"})),
    ];
    for (name, publication, spec) in keys {
        let labels = json!({ support::PUBLICATION_LABEL: publication });
        world.create_key(name, labels, spec).await;
    }
    for name in ["es", "rs", "enc", "other"] {
        world
            .wait_status(name, "a key", |s| active(s).is_some())
            .await;
    }
    world
        .create_main_publication(json!({"issuer": "https://auth.example.com"}))
        .await;

    let expected = status_kids(&world, &["es", "rs"]).await;
    let status = world
        .wait_kids("main", "the signing keys published", expected.clone())
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
    world
        .create_main_publication(json!({"server": {"enabled": false}}))
        .await;
    let a = world.create_active_key("a", in_main(), "ES256").await;
    let first = world
        .wait_kids("main", "a published", vec![a.clone()])
        .await;
    let since = first.keys[0].published_at.clone();
    let version = world.config_map_version("main-jwks").await;

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
    let b = world.create_active_key("b", in_main(), "EdDSA").await;
    let both = world
        .wait_publication("main", "b published too", |s| s.keys.len() == 2)
        .await;
    assert_eq!(
        both.keys.iter().find(|k| k.kid == a).unwrap().published_at,
        since,
        "a's first publication time is kept"
    );
    let after_b = world.config_map_version("main-jwks").await;
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
    world
        .wait_kids("main", "b withdrawn", vec![a.clone()])
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
    let status = world.publication_status("main").await;
    assert_eq!(
        publication_condition(&status, "Ready").unwrap().reason,
        "NoKeys"
    );

    let unchanged = world.config_map_version("main-jwks").await;
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
    world
        .create_main_publication(json!({"server": {"enabled": false}, "cacheMaxAge": "1s"}))
        .await;
    world
        .create_key("rotating", in_main(), rotating("ES256", "4s", "2s", "2s"))
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

/// Keys that rotate every second cannot make their publication write more than once per
/// `WRITE_INTERVAL`: additions wait and go out together, each still dated by the write that
/// added it (its `publishedAt`), which is what G1 counts from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_rotations_are_published_in_paced_batches() {
    let world = World::new().await;
    world
        .create_main_publication(json!({"server": {"enabled": false}}))
        .await;
    let names = ["fast-0", "fast-1", "fast-2", "fast-3"];
    for name in names {
        // A long grace period: no removal (which is written at once) within the test.
        world
            .create_key(name, in_main(), rotating("ES256", "1s", "200ms", "1h"))
            .await;
    }
    let status = world
        .wait_publication("main", "16 kids published", |s| s.keys.len() >= 16)
        .await;

    let mut writes: Vec<Timestamp> = status.keys.iter().map(|k| k.published_at.0).collect();
    writes.sort();
    writes.dedup();
    // publishedAt is taken just after the write, pacing's clock just before the next one: the
    // work between the two (copies, server objects) may shorten a gap a little, never by 0.5 s.
    let shortest = WRITE_INTERVAL.as_secs_f64() - 0.5;
    for pair in writes.windows(2) {
        let gap = pair[1].duration_since(pair[0]).as_secs_f64();
        assert!(
            gap >= shortest,
            "two writes adding kids {gap:.3}s apart (pacing: {WRITE_INTERVAL:?}); writes: {writes:?}"
        );
    }
    assert!(
        writes.len() < status.keys.len(),
        "{} kids in {} writes: additions were not batched",
        status.keys.len(),
        writes.len()
    );
    for name in names {
        let key = world.wait_status(name, "a status", |_| true).await;
        // A key's first kid signs at once (nothing verified tokens before it); every later one
        // only once published.
        let first = key
            .keys
            .iter()
            .min_by_key(|k| k.created_at.0)
            .map(|k| &k.kid);
        for published in &status.keys {
            let Some(ours) = key.keys.iter().find(|k| k.kid == published.kid) else {
                continue;
            };
            if Some(&ours.kid) == first {
                continue;
            }
            if let Some(activated) = &ours.activated_at {
                assert!(
                    activated.0 >= published.published_at.0 + SignedDuration::from_millis(200),
                    "G1: {} signed from {} but was published at {}",
                    published.kid,
                    activated.0,
                    published.published_at.0
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_server_removes_it_and_deleting_the_publication_removes_everything() {
    let world = World::new().await;
    world
        .create_key("k", in_main(), json!({"algorithm": "ES256"}))
        .await;
    world
        .create_main_publication(json!({"server": {"port": 9000}}))
        .await;
    let deployments = world.deployments();
    support::wait_exists(&deployments, "main-jwks", TIMEOUT).await;

    let disable = json!({"spec": {"server": {"enabled": false}}});
    world
        .publications()
        .patch("main", &PatchParams::default(), &Patch::Merge(&disable))
        .await
        .unwrap();
    let status = world
        .wait_reason("main", "ServerAvailable", "Disabled")
        .await;
    assert_eq!(status.url, None);
    assert_eq!(
        publication_condition(&status, "Ready").unwrap().status,
        "True",
        "the ConfigMap is the product"
    );
    support::wait_absent(&deployments, "main-jwks", TIMEOUT).await;
    support::wait_absent(&world.services(), "main-jwks", TIMEOUT).await;

    world
        .publications()
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    // Garbage-collected: the publication owns its ConfigMap.
    support::wait_absent(&world.config_maps(), "main-jwks", TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_max_age_longer_than_pre_publish_is_warned() {
    let world = World::new().await;
    world
        .create_key(
            "k",
            in_main(),
            json!({"algorithm": "ES256", "rotation": {"prePublish": "2m"}}),
        )
        .await;
    world
        .create_main_publication(json!({"server": {"enabled": false}, "cacheMaxAge": "10m"}))
        .await;
    let status = world
        .wait_reason("main", "Published", "PublishedWithWarnings")
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
    let deployment = support::wait_exists(&world.deployments(), "main-jwks", TIMEOUT).await;
    world.ns.default_service_account().await;

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

/// A publication named `a.b` defaults its objects to `a.b-jwks`: a ConfigMap may have that
/// name, a Service may not. The ConfigMap is published; the server is a condition and an event,
/// not a write the apiserver refuses on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_a_service_cannot_have_is_a_condition_and_the_config_map_is_still_published() {
    let world = World::new().await;
    let kid = world.create_active_key("k", in_main(), "ES256").await;
    world
        .create_publication("a.b", json!({"selector": {"matchLabels": in_main()}}))
        .await;
    let status = world
        .wait_reason("a.b", "ServerAvailable", "InvalidName")
        .await;
    let server = publication_condition(&status, "ServerAvailable").unwrap();
    assert_eq!(server.status, "False");
    assert!(
        server.message.contains("\"a.b-jwks\"") && server.message.contains("DNS-1035"),
        "{}",
        server.message
    );
    let ready = publication_condition(&status, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidName")
    );
    assert_eq!(
        publication_condition(&status, "Published").unwrap().status,
        "True"
    );
    assert_eq!(kids(&status), [kid.as_str()]);
    assert_eq!(status.url, None, "no server, no URL");
    let config_map = world.config_maps().get("a.b-jwks").await.unwrap();
    assert_eq!(kids_in(&config_map), [kid]);
    assert!(support::absent(&world.deployments(), "a.b-jwks").await);
    let note = world.wait_event("a.b", "InvalidName").await;
    assert!(note.contains("a.b-jwks"), "{note}");
    let log = world.operator.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("reconcile failed") && l.contains("\"a.b\"")),
        "the publication's reconcile failed:\n{log}"
    );
}

/// A Service or Deployment of the server's name that the publication does not control is never
/// applied over: a condition and an event name it, and the ConfigMap is still published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_server_objects_are_never_taken_over() {
    let world = World::new().await;
    let kid = world.create_active_key("k", in_main(), "ES256").await;
    let service = support::create(&world.services(), &foreign_service("svc-jwks")).await;
    let deployment = support::create(&world.deployments(), &foreign_deployment("dep-jwks")).await;
    for name in ["svc", "dep"] {
        world
            .create_publication(name, json!({"selector": {"matchLabels": in_main()}}))
            .await;
    }
    for (name, foreign) in [("svc", "Service svc-jwks"), ("dep", "Deployment dep-jwks")] {
        let status = world
            .wait_reason(name, "ServerAvailable", "ServerConflict")
            .await;
        let server = publication_condition(&status, "ServerAvailable").unwrap();
        assert!(
            server
                .message
                .starts_with(&format!("{foreign} exists and is not managed")),
            "{}",
            server.message
        );
        assert_eq!(
            publication_condition(&status, "Ready").unwrap().reason,
            "ServerConflict"
        );
        assert_eq!(kids(&status), [kid.as_str()], "the ConfigMap is published");
        assert_eq!(status.url, None);
        let config_map = world
            .config_maps()
            .get(&format!("{name}-jwks"))
            .await
            .unwrap();
        assert_eq!(kids_in(&config_map), [kid.as_str()]);
        let note = world.wait_event(name, "ServerConflict").await;
        assert!(note.contains(foreign), "{note}");
    }
    let after = world.services().get("svc-jwks").await.unwrap();
    assert_eq!(after.resource_version(), service.resource_version());
    assert!(after.owner_references().is_empty());
    // The Deployment's status is kube-controller-manager's to write, so its resourceVersion moves;
    // its spec, owners and field managers must not.
    let after = world.deployments().get("dep-jwks").await.unwrap();
    assert_eq!(after.spec, deployment.spec);
    assert!(after.owner_references().is_empty());
    let managers = support::managers(&after.metadata);
    assert!(!managers.contains(&"jwks-operator"), "{managers:?}");
    assert!(support::absent(&world.deployments(), "svc-jwks").await);
    assert!(support::absent(&world.services(), "dep-jwks").await);
}

/// A ConfigMap of that name that is someone else's: no server is pointed at it, and the status
/// claims nothing it holds (its kids would otherwise count as published for G1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_config_map_is_neither_served_nor_counted_as_published() {
    let world = World::new().await;
    let foreign = support::create_from(
        &world.config_maps(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "main-jwks"},
               "data": {"jwks.json": r#"{"keys":[{"kid":"foreign-kid","kty":"oct"}]}"#}}),
    )
    .await;
    world.create_active_key("k", in_main(), "ES256").await;
    world.create_main_publication(json!({})).await;
    let status = world
        .wait_reason("main", "Published", "ConfigMapConflict")
        .await;
    assert!(status.keys.is_empty(), "claims {:?}", status.keys);
    assert_eq!(status.etag, None);
    assert_eq!(status.url, None);
    let server = publication_condition(&status, "ServerAvailable").unwrap();
    assert_eq!(
        (server.status.as_str(), server.reason.as_str()),
        ("False", "ConfigMapConflict")
    );
    assert!(support::absent(&world.deployments(), "main-jwks").await);
    assert!(support::absent(&world.services(), "main-jwks").await);
    let after = world.config_maps().get("main-jwks").await.unwrap();
    assert_eq!(after.resource_version(), foreign.resource_version());
    world.wait_event("main", "ConfigMapConflict").await;
}

/// Writers never go backwards: a ConfigMap write carries the resourceVersion it was planned
/// from, so a writer that read the ConfigMap before the operator moved it on is refused (409)
/// and the newer content stays; a create that finds the ConfigMap exists is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_config_map_write_is_refused_and_newer_content_survives() {
    let world = World::new().await;
    world
        .create_main_publication(json!({"server": {"enabled": false}}))
        .await;
    let a = world.create_active_key("a", in_main(), "ES256").await;
    world
        .wait_kids("main", "a published", vec![a.clone()])
        .await;
    let stale = world.config_maps().get("main-jwks").await.unwrap();

    let b = world.create_active_key("b", in_main(), "ES256").await;
    let wanted = b.clone();
    let newer = world
        .wait_publication("main", "b published", move |s| kids(s).contains(&wanted))
        .await;
    let b_since = newer
        .keys
        .iter()
        .find(|k| k.kid == b)
        .unwrap()
        .published_at
        .clone();

    let desired = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: stale.metadata.name.clone(),
            labels: stale.metadata.labels.clone(),
            owner_references: stale.metadata.owner_references.clone(),
            ..Default::default()
        },
        data: stale.data.clone(),
        ..ConfigMap::default()
    };
    let config_maps = world.config_maps();
    let write = jwks_operator::controller::publication::write_config_map;
    for (what, observed) in [("a stale update", Some(&stale)), ("a create", None)] {
        let error = write(&config_maps, observed, desired.clone())
            .await
            .expect_err(what);
        assert!(error.is_conflict(), "{what}: {error}");
    }
    let current = world.config_maps().get("main-jwks").await.unwrap();
    assert!(kids_in(&current).contains(&b), "b survives");
    let status = world.publication_status("main").await;
    let kept = status.keys.iter().find(|k| k.kid == b).unwrap();
    assert_eq!(kept.published_at, b_since, "b's publishedAt is kept");
}

/// Renaming the ConfigMap removes what the publication owned under the old name: left behind,
/// it would go on serving frozen content, revoked keys included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_the_config_map_removes_the_old_config_map_deployment_and_service() {
    let world = World::new().await;
    let kid = world.create_active_key("k", in_main(), "ES256").await;
    world.create_main_publication(json!({})).await;
    let old = wait_for(TIMEOUT, "the ConfigMap, Deployment and Service", || async {
        let cm = world.config_maps().get_opt("main-jwks").await?;
        let deployment = world.deployments().get_opt("main-jwks").await?;
        let service = world.services().get_opt("main-jwks").await?;
        match (cm, deployment, service) {
            (Some(c), Some(d), Some(s)) => {
                Ok((c.uid().unwrap(), d.uid().unwrap(), s.uid().unwrap()))
            }
            _ => Err("not yet".into()),
        }
    })
    .await;

    let rename = json!({"spec": {"configMapName": "renamed"}});
    world
        .publications()
        .patch("main", &PatchParams::default(), &Patch::Merge(&rename))
        .await
        .unwrap();
    support::wait_deleted(&world.config_maps(), "main-jwks", &old.0, TIMEOUT).await;
    support::wait_deleted(&world.deployments(), "main-jwks", &old.1, TIMEOUT).await;
    support::wait_deleted(&world.services(), "main-jwks", &old.2, TIMEOUT).await;
    let status = world
        .wait_publication("main", "the new URL", |s| {
            s.url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://renamed."))
        })
        .await;
    assert_eq!(kids(&status), [kid.as_str()]);
    assert_eq!(
        kids_in(&world.config_maps().get("renamed").await.unwrap()),
        [kid]
    );
    world.deployments().get("renamed").await.unwrap();
    world.services().get("renamed").await.unwrap();
}

/// Revocation always wins at the publication too: a kid named in the SigningKey's revoke
/// annotation leaves the ConfigMap even while the SigningKey's status still lists it. Here the
/// SigningKey is being deleted (held by a finalizer), so its controller leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_kid_leaves_the_config_map_even_while_a_status_lists_it() {
    let world = World::new().await;
    world
        .create_main_publication(json!({"server": {"enabled": false}}))
        .await;
    let held = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    world
        .create_key("held", in_main(), json!({"algorithm": "ES256"}))
        .await;
    world
        .keys
        .patch("held", &PatchParams::default(), &Patch::Merge(&held))
        .await
        .unwrap();
    let kid = world.active_kid("held").await;
    world
        .wait_kids("main", "the kid published", vec![kid.clone()])
        .await;
    world
        .keys
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();

    world
        .annotate("held", "jwks-operator.io/revoke", &format!(" {kid} "))
        .await;
    world
        .wait_publication("main", "the revoked kid withdrawn", |s| s.keys.is_empty())
        .await;
    let config_map = world.config_maps().get("main-jwks").await.unwrap();
    assert!(kids_in(&config_map).is_empty(), "{config_map:?}");
    let key = world.keys.get("held").await.unwrap();
    assert!(
        key.status.unwrap().keys.iter().any(|k| k.kid == kid),
        "the SigningKey's status still lists the kid: the publication withdrew it on its own"
    );

    let release = json!({"metadata": {"finalizers": null}});
    world
        .keys
        .patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
}

/// GitOps templates render "no TLS" as an empty string: it is admitted and means plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_tls_secret_name_is_accepted_and_served_over_http() {
    let world = World::new().await;
    world
        .create_publication(
            "main",
            json!({"selector": {}, "server": {"tlsSecretName": ""}}),
        )
        .await;
    let status = world
        .wait_publication("main", "a URL", |s| s.url.is_some())
        .await;
    assert_eq!(
        status.url.unwrap(),
        format!(
            "http://main-jwks.{}.svc:8080/.well-known/jwks.json",
            world.ns.name
        )
    );
    let deployment = world.deployments().get("main-jwks").await.unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.volumes.unwrap().len(), 1, "no TLS volume");
    let container = &pod.containers[0];
    assert!(
        !container
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("--tls"))
    );
    let probe = container.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.scheme.as_deref(), Some("HTTP"));
    let service = world.services().get("main-jwks").await.unwrap();
    assert_eq!(
        service.spec.unwrap().ports.unwrap()[0].name.as_deref(),
        Some("http")
    );
}
