//! End to end on a real node (hack/control-plane/node.sh: containerd, kubelet, kube-proxy,
//! kube-scheduler): the chart installs the operator as pods from the image built here
//! (hack/image/build.sh), a publication's JWKS server runs as pods behind its Service, and
//! everything is checked the way a cluster admin and a verifier see it: through Services.
//!
//! One test in phases that build on each other: one node runs per machine, and the last phase
//! stops it and checks that nothing is left behind. What it measures (the kubelet's ConfigMap
//! projection delay, the leader hand-over, the certificate reload) goes to
//! `target/tmp/node-e2e.json` and into docs/benchmarks.md.
//!
//! Needs root and the image archive: `make test` builds it first (`make image` alone).

#[path = "fixtures/mod.rs"]
mod fixtures;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixtures::openssl;
use jwks_operator::api::{ACCEPT_COPIES_ANNOTATION, JwksPublication, KeyState, SigningKey};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::interop::{RotationVerifier, interop_tools, verify_remotely};
use support::{HttpResponse, TIMEOUT, http, kubectl, repo_root, shared_control_plane, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const OPERATOR_NAMESPACE: &str = "jwks-system";
const LEASE: &str = "jwks-operator";
/// Pods start in seconds here, but a 2-core machine under a parallel test run is slow.
const POD_TIMEOUT: Duration = Duration::from_secs(240);
/// The kubelet re-projects a changed ConfigMap or Secret into a running pod at its next sync of
/// that pod: `syncFrequency` (1 min) plus jitter, plus its cache's TTL.
const PROJECTION_TIMEOUT: Duration = Duration::from_secs(180);
/// prePublish of the rotating key: longer than the worst projection delay, as the README
/// tells users to choose it.
const PRE_PUBLISH: &str = "3m";
const PRE_PUBLISH_SECONDS: i64 = 180;
/// The publication `web`'s server pods.
const SERVER_PODS: &str = "app.kubernetes.io/instance=web";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_and_its_servers_run_on_a_real_node() {
    let uid = capture(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the node (containerd, network namespaces, iptables) needs root; run the tests as root"
    );
    let before = MachineNetwork::now();
    support::use_node(vec![image_archive()]);
    let cp = shared_control_plane().await;
    let client = support::client().await;
    let mut measured = BTreeMap::new();

    a_namespaced_install_runs_and_reconciles(&client).await;
    install_chart("jwks", OPERATOR_NAMESPACE, &[]).await;
    let operators = ready_pods(
        &client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/instance=jwks",
        2,
    )
    .await;
    lease_held_by_one_of(&client, OPERATOR_NAMESPACE, &operators).await;

    let web = ServedPublication::create(&client, &mut measured).await;
    web.answers_like_a_jwks_endpoint().await;
    web.projection_delays(&client, &mut measured).await;
    let consumer = Consumer::create(&client, &web).await;
    web.rotation_is_served_before_the_key_signs(&client, &mut measured)
        .await;
    consumer
        .verifies_every_token_until_the_new_key_signs(&client, &web, &mut measured)
        .await;
    web.a_server_pod_can_go_without_a_failed_request(&client)
        .await;
    the_leader_pod_can_go(&client, &mut measured).await;
    web.serves_https_and_a_rotated_certificate_without_a_restart(&client, &mut measured)
        .await;
    no_forbidden_calls(
        &client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/instance=jwks",
    )
    .await;

    let report = serde_json::to_string_pretty(&measured).unwrap();
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-e2e.json"),
        &report,
    )
    .unwrap();
    eprintln!("[node] measured: {report}");

    teardown_leaves_nothing(&cp.dir, &before);
}

// ---------------------------------------------------------------------------------------------
// Phases

/// Single-namespace mode: a Role, not a ClusterRole; its pods run, elect a leader in their
/// namespace, reconcile a SigningKey there, and make no call RBAC refuses. Uninstalled after.
async fn a_namespaced_install_runs_and_reconciles(client: &Client) {
    let namespace = "team-a";
    install_chart("scoped", namespace, &["watchNamespace=team-a"]).await;
    let selector = "app.kubernetes.io/instance=scoped";
    let pods = ready_pods(client, namespace, selector, 2).await;
    lease_held_by_one_of(client, namespace, &pods).await;
    create_key(client, namespace, "team-key", json!({}), "24h", "1h").await;
    wait_key_ready(client, namespace, "team-key").await;
    no_forbidden_calls(client, namespace, selector).await;
    let out =
        run_blocking(helm().args(["uninstall", "scoped", "--namespace", namespace, "--wait"]))
            .await;
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        text(&out.stderr)
    );
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(POD_TIMEOUT, "the scoped operator pods to go", || async {
        let left = pods_api
            .list(&ListParams::default().labels(selector))
            .await?;
        match left.items.len() {
            0 => Ok(()),
            n => Err(format!("{n} pods left").into()),
        }
    })
    .await;
}

/// The leader's pod is deleted: the other replica takes the Lease over and reconciles.
async fn the_leader_pod_can_go(client: &Client, measured: &mut BTreeMap<&str, Value>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let leader = holder(&leases).await.expect("a leader");
    let started = Instant::now();
    pods.delete(&leader, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting the leader pod {leader}: {e}"));
    let successor = wait_for(POD_TIMEOUT, "another replica to take the Lease", || {
        let leases = leases.clone();
        let leader = leader.clone();
        async move {
            match holder(&leases).await {
                Some(h) if h != leader => Ok(h),
                h => Err(format!("held by {h:?}").into()),
            }
        }
    })
    .await;
    let gap = started.elapsed();
    measured.insert("leader_handover_seconds", json!(gap.as_secs_f64()));
    // The new leader reconciles: a key created now becomes Ready.
    create_key(client, "web", "after-failover", json!({}), "24h", "1h").await;
    wait_key_ready(client, "web", "after-failover").await;
    eprintln!("[node] {leader} deleted; {successor} leads after {gap:?}");
    ready_pods(
        client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/instance=jwks",
        2,
    )
    .await;
}

/// A publication in a namespace that enforces the `restricted` Pod Security Standard, with
/// its server pods behind a Service, reached at the Service's ClusterIP.
struct ServedPublication {
    namespace: String,
    /// `<ClusterIP>:8080`.
    address: String,
}

impl ServedPublication {
    async fn create(client: &Client, measured: &mut BTreeMap<&str, Value>) -> ServedPublication {
        let namespace = "web";
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace, "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted"}}}))
                .unwrap(),
            )
            .await
            .unwrap();
        let label = json!({"jwks-operator.io/publication": "web"});
        create_key(
            client,
            namespace,
            "web-key",
            label.clone(),
            "24h",
            PRE_PUBLISH,
        )
        .await;
        let publications: Api<JwksPublication> = Api::namespaced(client.clone(), namespace);
        publications
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"matchLabels": label}, "cacheMaxAge": "1m",
                             "server": {"replicas": 2, "port": 8080}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        wait_publication_ready(client, namespace).await;
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let ip = services
            .get("web-jwks")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP");
        let served = ServedPublication {
            namespace: namespace.into(),
            address: format!("{ip}:8080"),
        };
        // Ready counts available pods and the keys in the ConfigMap. kube-proxy programs the
        // pods' endpoints a moment later (until then the Service refuses connections), and a
        // pod that started before the key was in the ConfigMap serves it only once the kubelet
        // has re-projected its volume: wait until the Service answers and every pod has the key.
        let ready = Instant::now();
        wait_for(TIMEOUT, "the Service to answer", || async {
            match served.get("/.well-known/jwks.json", &[]).await?.status {
                200 => Ok(()),
                status => Err(format!("HTTP {status}").into()),
            }
        })
        .await;
        wait_for(
            PROJECTION_TIMEOUT,
            "every server pod to serve a key",
            || async {
                let lagging: Vec<String> = served
                    .kids_by_pod(client)
                    .await?
                    .into_iter()
                    .filter(|(_, kids)| kids.is_empty())
                    .map(|(pod, _)| pod)
                    .collect();
                match lagging.is_empty() {
                    true => Ok(()),
                    false => Err(format!("no key yet from {lagging:?}").into()),
                }
            },
        )
        .await;
        measured.insert(
            "publication_ready_to_key_served_seconds",
            json!(ready.elapsed().as_secs_f64()),
        );
        served
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, String> {
        http(&self.address, "GET", path, headers).await
    }

    /// Waits until the server Deployment runs two up-to-date, available pods and no other pod
    /// (an old one still terminating) is left behind the Service.
    async fn rolled_out(&self, client: &Client) {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        wait_for(POD_TIMEOUT, "the server Deployment rolled out", || async {
            let deployment = deployments.get("web-jwks").await?;
            let status = deployment.status.unwrap_or_default();
            let current = status.observed_generation == deployment.metadata.generation;
            let counts = (
                status.replicas,
                status.updated_replicas,
                status.available_replicas,
            );
            let left = pods
                .list(&ListParams::default().labels(SERVER_PODS))
                .await?
                .items
                .len();
            if current && counts == (Some(2), Some(2), Some(2)) && left == 2 {
                Ok(())
            } else {
                Err(format!("replicas/updated/available {counts:?}, {left} pods").into())
            }
        })
        .await;
    }

    /// The kids each server pod serves, asked at its pod IP (the Service picks one at random).
    async fn kids_by_pod(
        &self,
        client: &Client,
    ) -> Result<Vec<(String, Vec<String>)>, support::Pending> {
        let api: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let port = self.address.rsplit(':').next().unwrap_or("8080");
        let mut served = Vec::new();
        for pod in api
            .list(&ListParams::default().labels(SERVER_PODS))
            .await?
            .items
        {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ip = pod
                .status
                .and_then(|s| s.pod_ip)
                .ok_or("a pod without an IP")?;
            let response = http(
                &format!("{ip}:{port}"),
                "GET",
                "/.well-known/jwks.json",
                &[],
            )
            .await?;
            let jwks: Value = serde_json::from_slice(&response.body)?;
            let kids = jwks["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                .collect();
            served.push((pod.metadata.name.unwrap_or_default(), kids));
        }
        Ok(served)
    }

    /// The JWKS through the ClusterIP, with ETag/304 and CORS.
    async fn answers_like_a_jwks_endpoint(&self) {
        let jwks = self
            .get(
                "/.well-known/jwks.json",
                &[("Origin", "https://app.example")],
            )
            .await
            .unwrap();
        assert_eq!(jwks.status, 200, "{}", jwks.text());
        assert_eq!(jwks.header("access-control-allow-origin"), Some("*"));
        assert!(
            jwks.header("cache-control")
                .is_some_and(|c| c.contains("max-age=60"))
        );
        let keys: Value = serde_json::from_slice(&jwks.body).unwrap();
        assert!(!keys["keys"].as_array().unwrap().is_empty(), "{keys}");
        let etag = jwks.header("etag").expect("an ETag").to_owned();
        let again = self
            .get("/.well-known/jwks.json", &[("If-None-Match", &etag)])
            .await
            .unwrap();
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }

    /// A token signed with the Secret's key verifies in jose, PyJWT and go-oidc, each fetching
    /// discovery and keys from `issuer` through the Service, trusting `ca`.
    async fn tokens_verify_in_real_libraries(&self, client: &Client, issuer: &str, ca: &Path) {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let data = secrets.get("web-key").await.unwrap().data.unwrap();
        let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        let keys =
            vec![json!({"alg": field("alg"), "kid": field("kid"), "key_pem": field("key.pem")})];
        let (issuer, ca) = (issuer.to_owned(), ca.to_owned());
        tokio::task::spawn_blocking(move || {
            let tools = interop_tools();
            let scratch = support::new_temp_dir("node-interop").unwrap();
            verify_remotely(&tools, &issuer, &keys, Some(&ca), &scratch);
        })
        .await
        .unwrap();
    }

    /// How long a ConfigMap change takes to be served by the pods: the kubelet re-projects a
    /// mounted ConfigMap at its next sync of the pod. Three changes of `cacheMaxAge`, each timed
    /// from the spec change (the operator rewrites the ConfigMap within milliseconds) to the
    /// first response through the Service that carries it.
    async fn projection_delays(&self, client: &Client, measured: &mut BTreeMap<&str, Value>) {
        let publications: Api<JwksPublication> = Api::namespaced(client.clone(), &self.namespace);
        let mut delays = Vec::new();
        for seconds in [61, 62, 63] {
            publications
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"cacheMaxAge": format!("{seconds}s")}})),
                )
                .await
                .unwrap();
            let written = Instant::now();
            wait_for(
                PROJECTION_TIMEOUT,
                &format!("max-age={seconds} served"),
                || async {
                    let response = self.get("/.well-known/jwks.json", &[]).await?;
                    let cache = response.header("cache-control").unwrap_or_default();
                    if cache.contains(&format!("max-age={seconds}")) {
                        Ok(())
                    } else {
                        Err(format!("Cache-Control: {cache}").into())
                    }
                },
            )
            .await;
            delays.push(written.elapsed().as_secs_f64());
        }
        eprintln!("[node] ConfigMap change to served: {delays:?} s");
        measured.insert("configmap_change_to_served_seconds", json!(delays));
    }

    /// A rotation watched through the Service: the new kid is served before it signs (G1 with
    /// a real kubelet in between), and no request fails meanwhile.
    async fn rotation_is_served_before_the_key_signs(
        &self,
        client: &Client,
        measured: &mut BTreeMap<&str, Value>,
    ) {
        let keys: Api<SigningKey> = Api::namespaced(client.clone(), &self.namespace);
        let before = keys.get("web-key").await.unwrap();
        let old_kid = before.status.unwrap().active_kid.unwrap();
        let poller = Poller::start(self.address.clone(), Duration::from_millis(200));
        keys.patch(
            "web-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "jwks-operator.io/rotate": Timestamp::now().to_string()}}})),
        )
        .await
        .unwrap();
        let new_kid = wait_for(TIMEOUT, "a pending key", || async {
            let status = keys.get("web-key").await?.status.ok_or("no status")?;
            let pending = status
                .keys
                .iter()
                .find(|k| k.state == KeyState::Pending && k.kid != old_kid)
                .ok_or("no pending key yet")?;
            Ok(pending.kid.clone())
        })
        .await;
        let publications: Api<JwksPublication> = Api::namespaced(client.clone(), &self.namespace);
        let published_at = wait_for(TIMEOUT, "the new kid in the ConfigMap", || async {
            let status = publications.get("web").await?.status.ok_or("no status")?;
            let key = status
                .keys
                .iter()
                .find(|k| k.kid == new_kid)
                .ok_or("not yet")?;
            Ok(key.published_at.0)
        })
        .await;
        // Served once every pod serves it: a verifier may reach any of them.
        let served_at = wait_for(
            PROJECTION_TIMEOUT,
            "the new kid served by every pod",
            || async {
                let lagging: Vec<String> = self
                    .kids_by_pod(client)
                    .await?
                    .into_iter()
                    .filter(|(_, kids)| !kids.contains(&new_kid))
                    .map(|(pod, _)| pod)
                    .collect();
                match lagging.is_empty() {
                    true => Ok(Timestamp::now()),
                    false => Err(format!("not yet from {lagging:?}").into()),
                }
            },
        )
        .await;
        let polls = poller.stop();
        let failures: Vec<&String> = polls.iter().filter_map(|p| p.as_ref().err()).collect();
        assert!(
            failures.is_empty(),
            "requests failed during the rotation: {failures:?}"
        );
        // G1 lets the key sign prePublish after its publication, and not before.
        let activates_at = published_at + SignedDuration::from_secs(PRE_PUBLISH_SECONDS);
        assert!(
            served_at < activates_at,
            "{new_kid} was served at {served_at}, after it may sign ({activates_at})"
        );
        let delay = served_at.duration_since(published_at);
        eprintln!(
            "[node] {new_kid}: in the ConfigMap at {published_at}, served at {served_at} \
             ({delay:#}), signs at {activates_at}; {} requests, none failed",
            polls.len()
        );
        measured.insert(
            "new_kid_configmap_to_served_seconds",
            json!(delay.as_secs_f64()),
        );
        measured.insert("requests_during_rotation", json!(polls.len()));
    }

    /// One of the two server pods is deleted: the Service answers every request meanwhile.
    async fn a_server_pod_can_go_without_a_failed_request(&self, client: &Client) {
        let selector = SERVER_PODS;
        let pods = ready_pods(client, &self.namespace, selector, 2).await;
        let poller = Poller::start(self.address.clone(), Duration::from_millis(20));
        let api: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let victim = api.get(&pods[0]).await.unwrap();
        api.delete(&pods[0], &DeleteParams::default())
            .await
            .unwrap();
        support::wait_deleted(&api, &pods[0], &victim.uid().unwrap(), POD_TIMEOUT).await;
        self.rolled_out(client).await;
        let polls = poller.stop();
        let failures: Vec<&String> = polls.iter().filter_map(|p| p.as_ref().err()).collect();
        eprintln!(
            "[node] a server pod went: {} requests, {} failed",
            polls.len(),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{} of {} requests failed while a server pod went: {failures:?}",
            failures.len(),
            polls.len()
        );
    }

    /// `tlsSecretName` and an https issuer: the pods serve HTTPS with the Secret's certificate,
    /// discovery names the issuer, tokens verify in real libraries through it, and a new
    /// certificate in the Secret is served without a pod restart.
    async fn serves_https_and_a_rotated_certificate_without_a_restart(
        &self,
        client: &Client,
        measured: &mut BTreeMap<&str, Value>,
    ) {
        let ip = self.address.split(':').next().unwrap().to_owned();
        let pki = support::new_temp_dir("node-tls").unwrap();
        let ca = Certificates::new_ca(&pki);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        secrets
            .create(
                &PostParams::default(),
                &ca.server_secret("web-tls", &ip, "first"),
            )
            .await
            .unwrap();
        let publications: Api<JwksPublication> = Api::namespaced(client.clone(), &self.namespace);
        let issuer = format!("https://{}", self.address);
        publications
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"issuer": issuer, "server": {"tlsSecretName": "web-tls"}}}),
                ),
            )
            .await
            .unwrap();
        let first = ca.serial("first");
        wait_for(POD_TIMEOUT, "HTTPS with the first certificate", || {
            futures_ready(match ca.served_serial(&self.address) {
                Some(s) if s == first => Ok(()),
                other => Err(format!("serving {other:?}").into()),
            })
        })
        .await;
        // Until the plain-HTTP pods are gone (they keep accepting through their shutdown
        // delay), a TLS client may still reach one of them.
        self.rolled_out(client).await;
        wait_publication_ready(client, &self.namespace).await;
        let discovery = wait_for(
            PROJECTION_TIMEOUT,
            "discovery naming the https issuer",
            || {
                futures_ready(
                    ca.get_json(&issuer, "/.well-known/openid-configuration")
                        .and_then(|d| {
                            if d["issuer"] == json!(issuer) {
                                Ok(d)
                            } else {
                                Err(format!("issuer {}", d["issuer"]).into())
                            }
                        }),
                )
            },
        )
        .await;
        assert_eq!(
            discovery["jwks_uri"],
            json!(format!("{issuer}/.well-known/jwks.json"))
        );
        self.tokens_verify_in_real_libraries(client, &issuer, &ca.dir.join("ca.crt"))
            .await;
        let selector = SERVER_PODS;
        let before = pod_restarts(client, &self.namespace, selector).await;

        secrets
            .replace(
                "web-tls",
                &PostParams::default(),
                &ca.server_secret("web-tls", &ip, "second"),
            )
            .await
            .unwrap();
        let changed = Instant::now();
        let second = ca.serial("second");
        wait_for(PROJECTION_TIMEOUT, "the second certificate served", || {
            let served = ca.served_serial(&self.address);
            futures_ready(match served {
                Some(s) if s == second => Ok(()),
                other => Err(format!("serving {other:?}").into()),
            })
        })
        .await;
        measured.insert(
            "certificate_change_to_served_seconds",
            json!(changed.elapsed().as_secs_f64()),
        );
        let after = pod_restarts(client, &self.namespace, selector).await;
        assert_eq!(before, after, "the server pods were restarted or replaced");
    }
}

/// A service in another namespace that verifies tokens with the publication's JWKS as its pods
/// see it: its copy of the ConfigMap (`spec.copies`), mounted and served by `serve --dir` (any
/// static file server would do), read by a `jose` verifier.
struct Consumer {
    /// `<ClusterIP>:8080` of its Service.
    address: String,
    /// Where `jose` is (tests/interop/setup.sh).
    node_path: String,
}

const CONSUMER_NAMESPACE: &str = "consumer";

impl Consumer {
    /// The namespace accepts copies from the publication's; the publication copies itself
    /// there; a Deployment mounts the copy and a Service fronts it.
    async fn create(client: &Client, web: &ServedPublication) -> Consumer {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = json!({"metadata": {"name": CONSUMER_NAMESPACE, "annotations": {
            ACCEPT_COPIES_ANNOTATION: web.namespace}}});
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(namespace).unwrap(),
            )
            .await
            .unwrap();
        let publications: Api<JwksPublication> = Api::namespaced(client.clone(), &web.namespace);
        let copies = json!({"spec": {"copies": {"namespaces": [CONSUMER_NAMESPACE]}}});
        publications
            .patch("web", &PatchParams::default(), &Patch::Merge(&copies))
            .await
            .unwrap();
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), CONSUMER_NAMESPACE);
        support::wait_exists(&config_maps, "web-jwks", TIMEOUT).await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &web.namespace);
        let server = deployments.get("web-jwks").await.unwrap();
        let image = server.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        let labels = json!({"app": "verifier"});
        let deployment = json!({
            "metadata": {"name": "verifier"},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true},
                    "containers": [{
                        "name": "verifier", "image": image,
                        "args": ["serve", "--dir", "/etc/jwks", "--listen", "0.0.0.0:8080"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "jwks", "mountPath": "/etc/jwks", "readOnly": true}],
                    }],
                    "volumes": [{"name": "jwks", "configMap": {"name": "web-jwks"}}],
                },
            }},
        });
        let consumer_deployments: Api<Deployment> =
            Api::namespaced(client.clone(), CONSUMER_NAMESPACE);
        support::create_from(&consumer_deployments, deployment).await;
        let service = json!({"metadata": {"name": "verifier"}, "spec": {
            "selector": labels, "ports": [{"port": 8080, "targetPort": "http"}]}});
        let services: Api<Service> = Api::namespaced(client.clone(), CONSUMER_NAMESPACE);
        let service = support::create_from(&services, service).await;
        ready_pods(client, CONSUMER_NAMESPACE, "app=verifier", 1).await;
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP");
        let node_path =
            tokio::task::spawn_blocking(interop_tools).await.unwrap()["NODE_PATH"].clone();
        let consumer = Consumer {
            address: format!("{ip}:8080"),
            node_path,
        };
        wait_for(TIMEOUT, "the consumer's Service to answer", || async {
            consumer.kids().await.map(|_| ())
        })
        .await;
        consumer
    }

    /// The kids the consumer serves from its mounted copy.
    async fn kids(&self) -> Result<Vec<String>, support::Pending> {
        let response = http(&self.address, "GET", "/.well-known/jwks.json", &[]).await?;
        if response.status != 200 {
            return Err(format!("HTTP {}", response.status).into());
        }
        Ok(support::kids_in_jwks(&response.text()))
    }

    /// Every second, a token signed with the key the Secret holds at that instant is verified
    /// by `jose` (1 s JWKS cache) against the consumer's JWKS, from while the old key signs
    /// until the new one has signed five tokens: none fails, so the new key reached the other
    /// namespace's pods before it signed.
    async fn verifies_every_token_until_the_new_key_signs(
        &self,
        client: &Client,
        web: &ServedPublication,
        measured: &mut BTreeMap<&str, Value>,
    ) {
        let keys: Api<SigningKey> = Api::namespaced(client.clone(), &web.namespace);
        let status = keys.get("web-key").await.unwrap().status.unwrap();
        let old_kid = status.active_kid.clone().unwrap();
        let new_kid = status
            .keys
            .iter()
            .find(|k| k.state == KeyState::Pending)
            .map(|k| k.kid.clone())
            .expect("the rotation phase left a pending key");
        let jwks_uri = format!("http://{}/.well-known/jwks.json", self.address);
        let mut verifier = RotationVerifier::start(&jwks_uri, &self.node_path);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &web.namespace);
        let started = Instant::now();
        let deadline =
            started + Duration::from_secs(PRE_PUBLISH_SECONDS as u64) + PROJECTION_TIMEOUT;
        let mut pace = tokio::time::interval(Duration::from_secs(1));
        let (mut by_old, mut by_new) = (0, 0);
        let mut copy_served_after = None;
        while by_new < 5 {
            assert!(Instant::now() < deadline, "{new_kid} did not sign in time");
            pace.tick().await;
            if copy_served_after.is_none() && self.kids().await.is_ok_and(|k| k.contains(&new_kid))
            {
                copy_served_after = Some(started.elapsed().as_secs_f64());
            }
            let kid = match verifier.verify_with(&secrets, "web-key").await {
                Ok(kid) => kid,
                Err(verdict) => {
                    panic!("a token signed with the active key failed at the consumer: {verdict}")
                }
            };
            match kid {
                kid if kid == new_kid => by_new += 1,
                kid if kid == old_kid => by_old += 1,
                other => panic!("signed with an unexpected kid {other}"),
            }
        }
        assert!(by_old > 0, "the loop began while the old key signed");
        eprintln!(
            "[node] consumer namespace: {by_old} tokens of {old_kid} and {by_new} of {new_kid} verified against its copy; \
             it served {new_kid} {copy_served_after:?} s into the loop"
        );
        measured.insert(
            "copy_consumer_tokens_verified",
            json!({"old_key": by_old, "new_key": by_new,
                   "new_kid_served_by_consumer_after_seconds": copy_served_after}),
        );
    }
}

/// Stops the control plane and its node, then looks for anything they left on this machine.
fn teardown_leaves_nothing(kcp_dir: &Path, before: &MachineNetwork) {
    let stop = Command::new(repo_root().join("hack/control-plane/start.sh"))
        .arg("stop")
        .env("KCP_DIR", kcp_dir)
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "start.sh stop: {}",
        text(&stop.stderr)
    );
    let node_dir = "/var/lib/kcp-node";
    assert_eq!(
        &MachineNetwork::now(),
        before,
        "veths or network namespaces left"
    );
    let links = capture(Command::new("ip").args(["-o", "link", "show"]));
    assert!(
        !links.contains(": kcp0"),
        "the bridge kcp0 is left:\n{links}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(node_dir), "mounts left:\n{mounts}");
    let rules = capture(&mut Command::new("iptables-save"));
    for chain in [":KUBE-", ":CNI-"] {
        assert!(!rules.contains(chain), "iptables chains left:\n{rules}");
    }
    let processes = support::processes_mentioning(node_dir);
    assert!(processes.is_empty(), "processes left: {processes:?}");
    for component in ["kubelet", "kube-proxy", "containerd-shim"] {
        let left = support::processes_mentioning(component);
        assert!(left.is_empty(), "{component} left: {left:?}");
    }
    assert!(!Path::new(node_dir).exists(), "{node_dir} left");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let ours = hierarchy.path().join("kcp-node");
        assert!(!ours.exists(), "cgroup {} left", ours.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The machine's veth links and named network namespaces: a pod's veth and network namespace
/// must go with the node.
#[derive(Debug, PartialEq)]
struct MachineNetwork {
    veths: Vec<String>,
    namespaces: Vec<String>,
}

impl MachineNetwork {
    fn now() -> MachineNetwork {
        // The `column`th word of each line, sorted.
        let column = |cmd: &mut Command, column: usize| -> Vec<String> {
            let mut words: Vec<String> = capture(cmd)
                .lines()
                .filter_map(|l| l.split_whitespace().nth(column).map(str::to_owned))
                .collect();
            words.sort();
            words
        };
        MachineNetwork {
            // "7: veth1234@if2: <BROADCAST,...": the name is the second word.
            veths: column(
                Command::new("ip").args(["-o", "link", "show", "type", "veth"]),
                1,
            ),
            // "cni-1234 (id: 0)": the first.
            namespaces: column(Command::new("ip").args(["netns", "list"]), 0),
        }
    }
}

/// The operator image, built by hack/image/build.sh (`make image`; `make test` runs it first).
fn image_archive() -> PathBuf {
    let path = std::env::var_os("JWKS_OPERATOR_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/image/jwks-operator.oci.tar"));
    assert!(
        path.is_file(),
        "no operator image at {}: build it with `make image` (hack/image/build.sh) first",
        path.display()
    );
    path
}

fn helm() -> Command {
    let home = support::new_temp_dir("helm-home").unwrap();
    let mut cmd = support::helm(&home);
    cmd.env("KUBECONFIG", &support::control_plane().kubeconfig);
    cmd
}

/// `helm install` of charts/jwks-operator with the image built here; waits for its pods.
async fn install_chart(release: &str, namespace: &str, sets: &[&str]) {
    let mut cmd = helm();
    cmd.args(["install", release])
        .arg(repo_root().join("charts/jwks-operator"))
        .args([
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            "4m",
        ])
        .args(["--set", "image.repository=localhost/jwks-operator"])
        .arg("--set")
        .arg(format!("image.tag={VERSION}"))
        .args(["--set", "image.pullPolicy=Never"]);
    for set in sets {
        cmd.arg("--set").arg(set);
    }
    let out = run_blocking(&mut cmd).await;
    if !out.status.success() {
        let pods = kubectl(&["describe", "pods", "-n", namespace]).await;
        panic!(
            "helm install {release}: {}\n{}",
            text(&out.stderr),
            pods.stdout
        );
    }
}

/// Waits for `count` Running, Ready pods that match `selector`, none restarted; their names.
async fn ready_pods(client: &Client, namespace: &str, selector: &str, count: usize) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        POD_TIMEOUT,
        &format!("{count} ready pods {selector}"),
        || async {
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await?
                .items;
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .map(|p| p.name_any())
                .collect();
            if ready.len() == count {
                Ok(ready)
            } else {
                Err(format!("{} of {} pods ready", ready.len(), pods.len()).into())
            }
        },
    )
    .await
}

/// Pod name → restart count of each container, for pods matching `selector`.
async fn pod_restarts(client: &Client, namespace: &str, selector: &str) -> BTreeMap<String, i32> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            (p.name_any(), restarts)
        })
        .collect()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn lease_held_by_one_of(client: &Client, namespace: &str, pods: &[String]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    wait_for(TIMEOUT, "the Lease held by an operator pod", || async {
        match holder(&leases).await {
            Some(h) if pods.contains(&h) => Ok(()),
            h => Err(format!("held by {h:?}, pods {pods:?}").into()),
        }
    })
    .await;
}

/// Every log line of every container of the matching pods: none may say RBAC refused a call;
/// and no container restarted (a crash would hide its log from this check).
async fn no_forbidden_calls(client: &Client, namespace: &str, selector: &str) {
    let restarts = pod_restarts(client, namespace, selector).await;
    let mut why = String::new();
    for (pod, _) in restarts.iter().filter(|(_, r)| **r > 0) {
        let previous = kubectl(&["logs", "-n", namespace, pod, "--previous", "--tail=40"]).await;
        let described = kubectl(&["describe", "pod", "-n", namespace, pod]).await;
        why.push_str(&format!(
            "--- {pod}, previous container:\n{previous}\n{}\n",
            described.stdout
        ));
    }
    assert!(why.is_empty(), "restarted: {restarts:?}\n{why}");
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
    {
        let name = pod.name_any();
        let logs = kubectl(&["logs", "-n", namespace, &name, "--all-containers"]).await;
        assert!(logs.success(), "kubectl logs {name}: {logs}");
        let forbidden: Vec<&str> = logs
            .stdout
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect();
        assert!(
            forbidden.is_empty(),
            "{namespace}/{name} was refused:\n{}",
            forbidden.join("\n")
        );
    }
}

async fn create_key(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: Value,
    interval: &str,
    pre_publish: &str,
) {
    let api: Api<SigningKey> = Api::namespaced(client.clone(), namespace);
    let key = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"algorithm": "ES256", "rotation": {
            "interval": interval, "prePublish": pre_publish, "gracePeriod": "10m"}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &key).await.unwrap();
}

async fn wait_key_ready(client: &Client, namespace: &str, name: &str) {
    let api: Api<SigningKey> = Api::namespaced(client.clone(), namespace);
    wait_for(
        TIMEOUT,
        &format!("SigningKey {namespace}/{name} Ready"),
        || async {
            let status = api.get(name).await?.status.ok_or("no status")?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.status == "True" => Ok(()),
                c => Err(format!("{c:?}").into()),
            }
        },
    )
    .await;
}

/// Ready=True: the ConfigMap is written and the server pods are available.
async fn wait_publication_ready(client: &Client, namespace: &str) {
    let api: Api<JwksPublication> = Api::namespaced(client.clone(), namespace);
    wait_for(POD_TIMEOUT, "the publication Ready", || async {
        let status = api.get("web").await?.status.ok_or("no status")?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.status == "True" => Ok(()),
            c => Err(format!("{c:?}").into()),
        }
    })
    .await;
}

/// The kids a response served, or why the request failed.
type Outcome = Result<Vec<String>, String>;

/// GETs the JWKS through the Service every `interval`, a new connection each time (so each may
/// go to another pod), and records each outcome with its time.
struct Poller {
    seen: Arc<Mutex<Vec<(Timestamp, Outcome)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(address: String, interval: Duration) -> Poller {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let outcome = match http(&address, "GET", "/.well-known/jwks.json", &[]).await {
                    Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body)
                        .map_err(|e| e.to_string())
                        .map(|jwks| {
                            jwks["keys"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                                .collect()
                        }),
                    Ok(r) => Err(format!("HTTP {}", r.status)),
                    Err(e) => Err(e),
                };
                sink.lock().unwrap().push((Timestamp::now(), outcome));
                tokio::time::sleep(interval).await;
            }
        });
        Poller { seen, task }
    }

    /// Stops polling; every outcome (the kids served, or why the request failed).
    fn stop(self) -> Vec<Outcome> {
        self.task.abort();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        seen.into_iter().map(|(_, o)| o).collect()
    }
}

/// A new P-256 private key in `dir/file`.
fn ec_key(dir: &Path, file: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            file,
        ],
    );
}

/// A test CA (openssl) and the server certificates it issues for the server's Secret.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn new_ca(dir: &Path) -> Certificates {
        ec_key(dir, "ca.key");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=node-e2e-ca",
                "-days",
                "1",
                "-out",
                "ca.crt",
            ],
        );
        Certificates {
            dir: dir.to_path_buf(),
        }
    }

    /// A `kubernetes.io/tls` Secret for `ip`, issued as `name` (its files stay in the dir).
    fn server_secret(&self, secret: &str, ip: &str, name: &str) -> Secret {
        let dir = &self.dir;
        ec_key(dir, &format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                "/CN=web-jwks",
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:{ip}\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
        let read = |f: String| std::fs::read_to_string(dir.join(f)).unwrap();
        serde_json::from_value(json!({
            "metadata": {"name": secret},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": read(format!("{name}.crt")), "tls.key": read(format!("{name}.key"))}
        }))
        .unwrap()
    }

    fn serial(&self, name: &str) -> String {
        let out = capture(
            Command::new("openssl")
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(self.dir.join(format!("{name}.crt"))),
        );
        out.trim().to_owned()
    }

    /// GET `base` + `path` over HTTPS, trusting only this CA.
    fn get_json(&self, base: &str, path: &str) -> Result<Value, support::Pending> {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5", "--cacert"])
            .arg(self.dir.join("ca.crt"))
            .arg(format!("{base}{path}"))
            .output()?;
        if !out.status.success() {
            return Err(text(&out.stderr).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The serial of the certificate `address` serves, verified against the CA; None if no
    /// TLS handshake that verifies succeeds.
    fn served_serial(&self, address: &str) -> Option<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {address} -CAfile {ca} -verify_return_error </dev/null 2>/dev/null \
                 | openssl x509 -noout -serial",
                ca = self.dir.join("ca.crt").display()
            ))
            .output()
            .ok()?;
        let serial = text(&out.stdout).trim().to_owned();
        (out.status.success() && serial.starts_with("serial=")).then_some(serial)
    }
}

fn futures_ready<T>(value: T) -> std::future::Ready<T> {
    std::future::ready(value)
}

async fn run_blocking(cmd: &mut Command) -> std::process::Output {
    let mut cmd = std::mem::replace(cmd, Command::new("true"));
    tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap()
}

fn capture(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    text(&out.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
