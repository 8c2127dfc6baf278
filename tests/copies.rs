//! A publication's copies in other namespaces, with a cluster-wide operator (`jwks-operator run`
//! without `--namespace`, as the chart installs it by default) on this binary's own control
//! plane. One test in phases, as one operator serves every namespace here: copies follow
//! namespace labels and consent, never touch a ConfigMap that is not theirs, never carry keys of
//! another namespace, hold a new key back while one of them cannot be written (G1 per copy,
//! with a real admission policy refusing the write), and go with the publication.

mod support;

use std::collections::BTreeMap;

use jwks_operator::api::{
    ACCEPT_COPIES_ANNOTATION, COPY_OF_LABEL, CopiesStatus, JwksPublication, JwksPublicationStatus,
    KeyState, PUBLICATION_LABEL, ROTATE_ANNOTATION, SigningKey, SigningKeyStatus,
};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    PublicationBuilder, SigningKeyBuilder, TIMEOUT, kids_in_jwks, test_namespace, wait_absent,
    wait_exists, wait_for,
};

/// The namespace label the publication's selector chooses.
const LABEL: &str = "copies.jwks-operator.test/issuer";
const PRE_PUBLISH_SECONDS: i64 = 3;
const COPY: &str = "main-jwks";
/// How long a copy that could not be written (or a foreign ConfigMap) waits for a retry.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_follow_their_namespaces_and_hold_new_keys_until_every_copy_has_them() {
    let source = test_namespace().await;
    let _operator = support::start_cluster_operator().await;
    let client = source.client.clone();
    let tag = source.name.as_str();
    let selected = namespace(&client, "selected", json!({LABEL: tag}), Some(tag)).await;
    let named = namespace(&client, "named", json!({}), Some(&format!("other, {tag}"))).await;
    let refusing = namespace(&client, "refusing", json!({LABEL: tag}), None).await;
    let foreign = namespace(&client, "foreign", json!({LABEL: tag}), Some("*")).await;
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": COPY}, "data": {"theirs": "yes"}});
    support::create_from(&config_maps(&client, &foreign), theirs).await;
    // A SigningKey in a target namespace with the labels the publication selects.
    let intruder = SigningKeyBuilder::new("intruder")
        .label(PUBLICATION_LABEL, "main")
        .algorithm("ES256");
    support::create(&keys(&client, &selected), &intruder.build()).await;

    let key = SigningKeyBuilder::new("main-key")
        .label(PUBLICATION_LABEL, "main")
        .algorithm("ES256")
        .rotate_every("1h")
        .pre_publish(&format!("{PRE_PUBLISH_SECONDS}s"));
    support::create(&keys(&client, tag), &key.build()).await;
    let publication = PublicationBuilder::new("main")
        .publication_label("main")
        .server(false)
        .field(
            "copies",
            json!({"namespaceSelector": {"matchLabels": {LABEL: tag}}, "namespaces": [named]}),
        );
    support::create(&publications(&client, tag), &publication.build()).await;

    // Copies where selected or named and accepted; a foreign ConfigMap is left alone.
    let first = wait_publication(&client, tag, "copies in two namespaces", |s| {
        s.keys.len() == 1 && s.copies.as_ref().is_some_and(|c| c.up_to_date == 2)
    })
    .await;
    let k1 = first.keys[0].kid.clone();
    assert_eq!(
        first.copies,
        Some(CopiesStatus {
            namespaces: 3,
            up_to_date: 2,
            stale: vec![],
            conflicting: vec![foreign.clone()],
            refused: vec![refusing.clone()],
        })
    );
    assert_eq!(condition(&first, "Copied"), ("False", "CopyConflict"));
    assert_eq!(condition(&first, "Ready"), ("False", "CopyConflict"));
    let primary = config_maps(&client, tag).get(COPY).await.unwrap();
    for namespace in [&selected, &named] {
        let copy = config_maps(&client, namespace).get(COPY).await.unwrap();
        assert_eq!(
            copy.data, primary.data,
            "the copy in {namespace} is identical"
        );
        assert!(copy.owner_references().is_empty());
        assert_eq!(
            copy.labels()[COPY_OF_LABEL],
            publication_uid(&client, tag).await
        );
        no_private_members(&copy);
    }
    let kept = config_maps(&client, &foreign).get(COPY).await.unwrap();
    assert_eq!(
        kept.data,
        Some(BTreeMap::from([("theirs".into(), "yes".into())]))
    );
    assert!(!kept.labels().contains_key(COPY_OF_LABEL));
    assert!(
        config_maps(&client, &refusing)
            .get_opt(COPY)
            .await
            .unwrap()
            .is_none()
    );
    let intruder_kid = active_kid(&client, &selected, "intruder").await;

    // Consent given, label removed, foreign ConfigMap gone: the copies follow.
    annotate_namespace(&client, &refusing, Some(tag)).await;
    wait_exists(&config_maps(&client, &refusing), COPY, TIMEOUT).await;
    label_namespace(&client, &selected, None).await;
    wait_absent(&config_maps(&client, &selected), COPY, TIMEOUT).await;
    config_maps(&client, &foreign)
        .delete(COPY, &DeleteParams::default())
        .await
        .unwrap();
    let settled = wait_publication(&client, tag, "every copy up to date", |s| {
        s.copies.as_ref().is_some_and(|c| {
            c.namespaces == 3
                && c.up_to_date == 3
                && c.conflicting.is_empty()
                && c.refused.is_empty()
        })
    })
    .await;
    assert_eq!(condition(&settled, "Copied"), ("True", "CopiesUpToDate"));
    assert_eq!(condition(&settled, "Ready"), ("True", "Ready"));
    // Keys are read in the publication's own namespace only (reconciled since the intruder
    // became active: the namespace changes above triggered it).
    let primary = config_maps(&client, tag).get(COPY).await.unwrap();
    assert_eq!(kids(&primary), [k1.as_str()], "never {intruder_kid}");

    // One copy cannot be written (an admission policy refuses it): the next key is published
    // everywhere else, but it neither counts as published nor signs until that copy holds it.
    let hold = AdmissionHold::install(&client, &named).await;
    rotate(&client, tag).await;
    let blocked = wait_key(&client, tag, "activation blocked by the held copy", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Rotating" && c.reason == "RotationBlocked")
    })
    .await;
    let k2 = blocked
        .keys
        .iter()
        .find(|k| k.state == KeyState::Pending)
        .map(|k| k.kid.clone())
        .expect("a pending key");
    assert_eq!(
        blocked.active_kid.as_ref(),
        Some(&k1),
        "the old key still signs"
    );
    let held = wait_publication(&client, tag, "the held copy reported stale", |s| {
        s.copies.as_ref().is_some_and(|c| !c.stale.is_empty())
    })
    .await;
    assert_eq!(held.copies.as_ref().unwrap().stale, [named.as_str()]);
    assert_eq!(condition(&held, "Copied"), ("False", "CopiesPending"));
    assert!(
        !held.keys.iter().any(|k| k.kid == k2),
        "{k2} is not published while a copy lacks it"
    );
    for namespace in [tag, refusing.as_str(), foreign.as_str()] {
        let copy = config_maps(&client, namespace).get(COPY).await.unwrap();
        assert!(
            kids(&copy).contains(&k2),
            "{namespace} already carries {k2}"
        );
    }
    let stale = config_maps(&client, &named).get(COPY).await.unwrap();
    assert!(!kids(&stale).contains(&k2));

    let released = Timestamp::now();
    hold.release(&client).await;
    let active = wait_key(&client, tag, "the next key active", |s| {
        s.active_kid.as_ref() == Some(&k2)
    })
    .await;
    let status = publication_status(&client, tag).await;
    let published_at = status
        .keys
        .iter()
        .find(|k| k.kid == k2)
        .expect("published")
        .published_at
        .0;
    let activated_at = active
        .keys
        .iter()
        .find(|k| k.kid == k2)
        .and_then(|k| k.activated_at.clone())
        .expect("activated")
        .0;
    assert!(
        published_at >= released,
        "{k2}'s publishedAt ({published_at}) counts from the last copy's write, after the hold was released ({released})"
    );
    assert!(
        activated_at >= published_at + SignedDuration::from_secs(PRE_PUBLISH_SECONDS),
        "G1 per copy: published {published_at}, active {activated_at}"
    );
    let caught_up = config_maps(&client, &named).get(COPY).await.unwrap();
    assert!(kids(&caught_up).contains(&k2));

    // The publication goes: every copy goes first (its finalizer), the foreign-free namespaces
    // are left as they were.
    publications(&client, tag)
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    for namespace in [&named, &refusing, &foreign] {
        wait_absent(&config_maps(&client, namespace), COPY, TIMEOUT).await;
    }
    wait_absent(&publications(&client, tag), "main", TIMEOUT).await;
}

// ---------------------------------------------------------------------------------------------

fn config_maps(client: &Client, namespace: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), namespace)
}

fn keys(client: &Client, namespace: &str) -> Api<SigningKey> {
    Api::namespaced(client.clone(), namespace)
}

fn publications(client: &Client, namespace: &str) -> Api<JwksPublication> {
    Api::namespaced(client.clone(), namespace)
}

fn kids(config_map: &ConfigMap) -> Vec<String> {
    kids_in_jwks(&config_map.data.as_ref().unwrap()["jwks.json"])
}

/// G3 in every copy: public members only.
fn no_private_members(config_map: &ConfigMap) {
    for (name, value) in config_map.data.as_ref().unwrap() {
        let Ok(document) = serde_json::from_str::<Value>(value) else {
            continue;
        };
        for key in document["keys"].as_array().into_iter().flatten() {
            for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(key.get(member).is_none(), "{name} has {member}");
            }
        }
    }
}

/// A new namespace named `copies-<purpose>-…` with these labels, accepting copies from
/// `accepts` (the annotation's value) if given.
async fn namespace(client: &Client, purpose: &str, labels: Value, accepts: Option<&str>) -> String {
    let annotations = accepts
        .map(|a| json!({ACCEPT_COPIES_ANNOTATION: a}))
        .unwrap_or(json!({}));
    let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "generateName": format!("copies-{purpose}-"), "labels": labels, "annotations": annotations}});
    support::create_from(&Api::<Namespace>::all(client.clone()), manifest)
        .await
        .name_any()
}

async fn annotate_namespace(client: &Client, name: &str, accepts: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {ACCEPT_COPIES_ANNOTATION: accepts}}});
    patch_namespace(client, name, patch).await;
}

async fn label_namespace(client: &Client, name: &str, value: Option<&str>) {
    patch_namespace(
        client,
        name,
        json!({"metadata": {"labels": {LABEL: value}}}),
    )
    .await;
}

async fn patch_namespace(client: &Client, name: &str, patch: Value) {
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn publication_uid(client: &Client, namespace: &str) -> String {
    let publication = publications(client, namespace).get("main").await.unwrap();
    publication.uid().unwrap()
}

async fn publication_status(client: &Client, namespace: &str) -> JwksPublicationStatus {
    let publication = publications(client, namespace).get("main").await.unwrap();
    publication.status.unwrap_or_default()
}

/// Polls the publication `main` until its status satisfies `check`.
async fn wait_publication(
    client: &Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&JwksPublicationStatus) -> bool,
) -> JwksPublicationStatus {
    wait_for(RETRY_TIMEOUT, what, || async {
        let status = publication_status(client, namespace).await;
        match check(&status) {
            true => Ok(status),
            false => Err(format!("{:?}", status.copies).into()),
        }
    })
    .await
}

/// Polls the SigningKey `main-key` until its status satisfies `check`.
async fn wait_key(
    client: &Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&SigningKeyStatus) -> bool,
) -> SigningKeyStatus {
    wait_for(TIMEOUT, what, || async {
        let key = keys(client, namespace).get("main-key").await?;
        let status = key.status.unwrap_or_default();
        match check(&status) {
            true => Ok(status),
            false => Err(format!("{:?}", status.conditions).into()),
        }
    })
    .await
}

async fn active_kid(client: &Client, namespace: &str, name: &str) -> String {
    wait_for(TIMEOUT, "an active key", || async {
        let key = keys(client, namespace).get(name).await?;
        Ok(key
            .status
            .and_then(|s| s.active_kid)
            .ok_or("not active yet")?)
    })
    .await
}

async fn rotate(client: &Client, namespace: &str) {
    let patch =
        json!({"metadata": {"annotations": {ROTATE_ANNOTATION: Timestamp::now().to_string()}}});
    keys(client, namespace)
        .patch("main-key", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// (status, reason) of the publication's condition `type_`.
fn condition<'a>(status: &'a JwksPublicationStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {:?}", status.conditions));
    (c.status.as_str(), c.reason.as_str())
}

/// A ValidatingAdmissionPolicy refusing every ConfigMap write in one namespace: what a webhook
/// outage, a quota or a policy engine does to a copy there.
struct AdmissionHold {
    name: String,
}

impl AdmissionHold {
    async fn install(client: &Client, namespace: &str) -> AdmissionHold {
        let name = format!("hold-{namespace}");
        let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            },
            "validations": [{"expression": "false", "message": "ConfigMaps are held here"}],
        }});
        let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]}});
        support::create_from(
            &Api::<ValidatingAdmissionPolicy>::all(client.clone()),
            policy,
        )
        .await;
        support::create_from(
            &Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
            binding,
        )
        .await;
        // The policy takes effect once the apiserver has loaded it: a dry-run write says when.
        let copies = config_maps(client, namespace);
        let touch = json!({"metadata": {"annotations": {"probe": Timestamp::now().to_string()}}});
        let dry_run = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        wait_for(TIMEOUT, "the admission policy in force", || async {
            match copies.patch(COPY, &dry_run, &Patch::Merge(&touch)).await {
                Err(kube::Error::Api(status)) if status.message.contains("held here") => Ok(()),
                other => Err(format!("{other:?}").into()),
            }
        })
        .await;
        AdmissionHold { name }
    }

    async fn release(self, client: &Client) {
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}
