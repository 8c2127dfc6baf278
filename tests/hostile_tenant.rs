//! One tenant's hostile objects against an operator that serves every namespace: absurd
//! schedules, names that collide with other objects, a Secret planted under a SigningKey's name.
//! Another tenant's keys go on rotating on time, its revocations land within seconds, nothing
//! foreign is modified, each hostile object says what is wrong, and the operator never exits.
//! Its own binary, so its own control plane: the operator here watches all namespaces.

#[path = "fixtures/mod.rs"]
mod fixtures;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use jwks_operator::api::{JwksPublication, KeyState, SigningKey, SigningKeyStatus};
use jwks_operator::jose::{Algorithm, KeySpec, PrivateKey};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{
    ChildProcess, PUBLICATION_LABEL, PublicationBuilder, SigningKeyBuilder, TIMEOUT, create,
    create_from, kids_in_jwks, managers, shared_control_plane, test_namespace, wait_for,
    wait_until,
};

fn operator_for_all_namespaces(kubeconfig: &std::path::Path) -> ChildProcess {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"])
        .arg(env!("CARGO_BIN_EXE_jwks-operator"))
        .args(["run", "--log-format", "json"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST");
    ChildProcess::spawn("operator", cmd)
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn active_kid(status: &SigningKeyStatus) -> Option<&str> {
    status.active_kid.as_deref()
}

fn kids_served(config_map: Option<&ConfigMap>) -> Vec<String> {
    config_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get("jwks.json"))
        .map(|jwks| kids_in_jwks(jwks))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_stall_redirect_or_hijack_another() {
    let cp = shared_control_plane().await;
    let a = test_namespace().await;
    let b = test_namespace().await;
    let client = a.client.clone();
    let keys_a: Api<SigningKey> = Api::namespaced(client.clone(), &a.name);
    let keys_b: Api<SigningKey> = Api::namespaced(client.clone(), &b.name);
    let pubs_a: Api<JwksPublication> = Api::namespaced(client.clone(), &a.name);
    let pubs_b: Api<JwksPublication> = Api::namespaced(client.clone(), &b.name);
    let secrets_a: Api<Secret> = Api::namespaced(client.clone(), &a.name);
    let services_a: Api<Service> = Api::namespaced(client.clone(), &a.name);
    let deployments_a: Api<Deployment> = Api::namespaced(client.clone(), &a.name);
    let config_maps_b: Api<ConfigMap> = Api::namespaced(client.clone(), &b.name);

    // Someone else's Service and Deployment in A, and a Secret planted under the name a
    // SigningKey will use: our labels, a lifecycle record, the planter's own key.
    let foreign_service = create(&services_a, &support::foreign_service("squatted")).await;
    let foreign_deployment = create(
        &deployments_a,
        &support::foreign_deployment("squatted-deploy"),
    )
    .await;
    let planted = PrivateKey::generate(KeySpec::new(Algorithm::Es256, None, None).unwrap())
        .unwrap()
        .to_private_jwk()
        .unwrap();
    let lifecycle = json!({"keys": [{"kid": planted.kid, "createdAt": "2026-01-01T00:00:00Z",
        "activatedAt": "2026-01-01T00:00:00Z"}], "signingKeyUid": "guessed"});
    let keyring = json!({"keys": [planted]}).to_string();
    create_from(
        &secrets_a,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "planted", "labels": {"app.kubernetes.io/managed-by": "jwks-operator"},
                     "annotations": {"jwks-operator.io/lifecycle": lifecycle.to_string()}},
        "data": {"keyring.jwks": ByteString(keyring.into_bytes())}}),
    )
    .await;

    let mut operator = operator_for_all_namespaces(&cp.kubeconfig);

    // A: what admission refuses (an absurd duration, a name a Service cannot have)...
    let absurd = keys_a
        .create(
            &PostParams::default(),
            &SigningKeyBuilder::new("absurd")
                .algorithm("ES256")
                .rotate_every("720h")
                .pre_publish("1h")
                .grace_period("99999999999999999999h")
                .build(),
        )
        .await
        .unwrap_err();
    assert!(absurd.to_string().contains("gracePeriod"), "{absurd}");
    let dotted = pubs_a
        .create(
            &PostParams::default(),
            &PublicationBuilder::new("dotted")
                .selector(json!({}))
                .field("configMapName", json!("a.b"))
                .build(),
        )
        .await
        .unwrap_err();
    assert!(dotted.to_string().contains("configMapName"), "{dotted}");
    // ...and what it admits: a ring that would grow for ever, names of others' objects, a
    // SigningKey whose Secret name is taken.
    let hoarder = SigningKeyBuilder::new("hoarder")
        .algorithm("ES256")
        .rotate_every("600ms")
        .pre_publish("200ms")
        .grace_period("720h");
    create(&keys_a, &hoarder.build()).await;
    // The hoarder is published by no one: a publication adds keys at most once per 2 s
    // (write pacing), which would hold its 600 ms rotations back to one per 2 s or so (G1) and
    // take minutes to fill the ring.
    for (name, selected, squatted) in [
        ("service-squatter", json!({"none": "y"}), "squatted"),
        (
            "deployment-squatter",
            json!({"none": "x"}),
            "squatted-deploy",
        ),
    ] {
        let squatter = PublicationBuilder::new(name)
            .match_labels(selected)
            .field("configMapName", json!(squatted));
        create(&pubs_a, &squatter.build()).await;
    }
    let victim = SigningKeyBuilder::new("victim")
        .algorithm("ES256")
        .field("secretName", json!("planted"));
    create(&keys_a, &victim.build()).await;

    // B: an ordinary tenant.
    let ordinary = SigningKeyBuilder::new("ordinary")
        .label(PUBLICATION_LABEL, "main")
        .algorithm("ES256")
        .rotate_every("4s")
        .pre_publish("1s")
        .grace_period("3s");
    create(&keys_b, &ordinary.build()).await;
    let main = PublicationBuilder::new("main")
        .publication_label("main")
        .server(false);
    create(&pubs_b, &main.build()).await;

    // B rotates on time: three handovers, each within a second or two of its nextRotationAt.
    let mut handovers = Vec::new();
    let mut seen: Option<(String, k8s_openapi::jiff::Timestamp)> = None;
    while handovers.len() < 3 {
        let previous = seen.as_ref().map(|(kid, _)| kid.clone());
        let status = wait_until(
            &keys_b,
            "ordinary",
            TIMEOUT,
            "the next handover in B",
            move |k: Option<&SigningKey>| {
                let s = k.and_then(|k| k.status.as_ref());
                s.and_then(active_kid)
                    .is_some_and(|kid| previous.as_deref() != Some(kid))
            },
        )
        .await
        .unwrap()
        .status
        .unwrap();
        let active = status
            .keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .unwrap();
        if let Some((_, due)) = &seen {
            handovers.push(active.activated_at.as_ref().unwrap().0.duration_since(*due));
        }
        seen = Some((active.kid.clone(), status.next_rotation_at.unwrap().0));
    }
    for late in &handovers {
        assert!(
            late.as_secs_f64() < 2.0,
            "B's handovers were late: {handovers:?}"
        );
    }

    // A revocation in B leaves B's ConfigMap within 5 s.
    let status = keys_b.get("ordinary").await.unwrap().status.unwrap();
    let revoked = active_kid(&status).unwrap().to_owned();
    wait_for(TIMEOUT, "B's ConfigMap serves the active kid", || async {
        let cm = config_maps_b.get_opt("main-jwks").await.unwrap();
        kids_served(cm.as_ref())
            .contains(&revoked)
            .then_some(())
            .ok_or_else(|| "not yet".into())
    })
    .await;
    let annotate = json!({"metadata": {"annotations": {"jwks-operator.io/revoke": revoked}}});
    keys_b
        .patch(
            "ordinary",
            &PatchParams::default(),
            &Patch::Merge(&annotate),
        )
        .await
        .unwrap();
    let asked = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "the revoked kid gone from B's ConfigMap within 5 s",
        || async {
            let cm = config_maps_b.get_opt("main-jwks").await.unwrap();
            (!kids_served(cm.as_ref()).contains(&revoked))
                .then_some(())
                .ok_or_else(|| "not yet".into())
        },
    )
    .await;
    eprintln!(
        "revocation reached B's ConfigMap after {:?}",
        asked.elapsed()
    );

    // Each of A's objects says what is wrong.
    let hoarder = wait_until(
        &keys_a,
        "hoarder",
        TIMEOUT,
        "the hoarder's ring at its cap",
        |k: Option<&SigningKey>| {
            k.and_then(|k| k.status.as_ref())
                .and_then(|s| condition(&s.conditions, "Rotating"))
                .is_some_and(|c| c.reason == "KeyRingFull")
        },
    )
    .await
    .unwrap();
    let status = hoarder.status.unwrap();
    assert_eq!(status.keys.len(), jwks_operator::lifecycle::MAX_RING_KEYS);
    assert!(
        active_kid(&status).is_some(),
        "the hoarder's active key still signs"
    );
    let victim = wait_until(
        &keys_a,
        "victim",
        TIMEOUT,
        "the planted Secret refused",
        |k: Option<&SigningKey>| {
            k.and_then(|k| k.status.as_ref())
                .and_then(|s| condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "SecretConflict")
        },
    )
    .await
    .unwrap();
    let status = victim.status.unwrap_or_default();
    assert!(
        status.keys.iter().all(|k| k.kid != planted.kid),
        "the planted key was adopted"
    );
    for (name, object) in [
        ("service-squatter", "squatted"),
        ("deployment-squatter", "squatted-deploy"),
    ] {
        wait_until(
            &pubs_a,
            name,
            TIMEOUT,
            "the squatting publication refused",
            move |p: Option<&JwksPublication>| {
                p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.status == "False" && c.message.contains(object))
                })
            },
        )
        .await
        .unwrap();
    }

    // Nothing foreign was touched (the Deployment's status is the deployment controller's to
    // write, so it is the spec, generation, and field managers that must be unchanged); the
    // operator is still there.
    let service = services_a.get("squatted").await.unwrap();
    assert_eq!(
        service.metadata.resource_version,
        foreign_service.metadata.resource_version
    );
    assert_eq!(service.spec, foreign_service.spec);
    let deployment = deployments_a.get("squatted-deploy").await.unwrap();
    assert_eq!(
        deployment.metadata.generation,
        foreign_deployment.metadata.generation
    );
    assert_eq!(deployment.spec, foreign_deployment.spec);
    assert_eq!(
        deployment.metadata.labels,
        foreign_deployment.metadata.labels
    );
    assert_eq!(
        deployment.metadata.owner_references,
        foreign_deployment.metadata.owner_references
    );
    let managers = managers(&deployment.metadata);
    assert!(!managers.contains(&"jwks-operator"), "{managers:?}");
    let planted_secret = secrets_a.get("planted").await.unwrap();
    assert_eq!(
        planted_secret
            .data
            .unwrap_or_default()
            .get("keyring.jwks")
            .map(|b| b.0.len()),
        Some(json!({"keys": [planted]}).to_string().len()),
        "the planted Secret was rewritten"
    );
    assert!(
        operator.try_status().is_none(),
        "the operator exited:\n{}",
        operator.log()
    );
    let log = operator.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains(&planted.d),
        "a private member reached the log"
    );
}
