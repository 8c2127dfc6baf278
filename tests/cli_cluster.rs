//! The cluster commands (`rotate`, `revoke`, `status`) against a real kube-apiserver: they set
//! exactly the annotations the operator reads, show the status it writes, pick the namespace the
//! way kubectl does, and fail with one line and exit 1 when the cluster says no.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use jwks_operator::api::{REVOKE_ANNOTATION, ROTATE_ANNOTATION, SigningKey};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{CommandOutput, SigningKeyBuilder, TIMEOUT, TestNamespace, test_namespace};

/// Runs the built binary with `KUBECONFIG` set (and no in-cluster fallback to stumble on).
async fn jwks_operator(kubeconfig: &Path, args: &[&str]) -> CommandOutput {
    let out = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-operator"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("jwks-operator {args:?} did not finish within {TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("cannot run jwks-operator: {e}"));
    CommandOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The binary against the shared control plane, as its admin.
async fn cli(args: &[&str]) -> CommandOutput {
    let kubeconfig = support::shared_control_plane().await.kubeconfig.clone();
    jwks_operator(&kubeconfig, args).await
}

/// Asserts a failure: exit 1, nothing on stdout, exactly one line on stderr; returns that line.
fn one_line_failure(out: &CommandOutput) -> &str {
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    let stderr = out.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{out}");
    assert!(!stderr.contains("panicked"), "{out}");
    stderr
}

/// A one-line failure saying the SigningKey `ghost` does not exist in `ns`.
fn assert_ghost_not_found(out: &CommandOutput, ns: &str) {
    let line = one_line_failure(out);
    assert!(
        line.contains(&format!("signingkey {ns}/ghost not found")),
        "{line}"
    );
}

fn assert_success(out: &CommandOutput) {
    assert!(out.success(), "{out}");
}

/// A copy of the admin kubeconfig, changed by `edit` (as JSON, which kubeconfig readers accept).
fn kubeconfig_variant(edit: impl FnOnce(&mut Value)) -> PathBuf {
    let original = &support::control_plane().kubeconfig;
    let text = std::fs::read_to_string(original).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    edit(&mut config);
    let path = support::new_temp_dir("cli-kubeconfig")
        .unwrap()
        .join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

async fn kubeconfig_variant_async(edit: impl FnOnce(&mut Value) + Send + 'static) -> PathBuf {
    tokio::task::spawn_blocking(move || kubeconfig_variant(edit))
        .await
        .unwrap()
}

async fn create_signing_key(api: &Api<SigningKey>, name: &str, spec: Value) -> SigningKey {
    support::create(api, &SigningKeyBuilder::new(name).spec(spec).build()).await
}

/// Writes `status` through the status subresource, as the operator would.
async fn set_status(api: &Api<SigningKey>, name: &str, status: Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot set the status of {name}: {e}"));
}

fn micro(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn key_status(kid: &str, state: &str, created: Timestamp) -> Value {
    json!({
        "kid": kid,
        "state": state,
        "createdAt": micro(created),
        "publicJwk": {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    })
}

/// A status with three held keys: `retired-kid`, `active-kid`, `pending-kid`.
fn three_key_status(now: Timestamp) -> Value {
    let ago = |h: i64| now - SignedDuration::from_hours(h);
    let mut retired = key_status("retired-kid", "Retired", ago(48));
    retired["activatedAt"] = json!(micro(ago(47)));
    retired["retiredAt"] = json!(micro(ago(2)));
    retired["removeAfter"] = json!(micro(now + SignedDuration::from_hours(22)));
    let mut active = key_status("active-kid", "Active", ago(3));
    active["activatedAt"] = json!(micro(ago(2)));
    let pending = key_status("pending-kid", "Pending", now);
    json!({
        "activeKid": "active-kid",
        "nextRotationAt": micro(now + SignedDuration::from_hours(30 * 24)),
        "keys": [retired, active, pending],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KeyActive",
            "message": "active-kid signs", "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }],
    })
}

/// A namespace of one's own holding the SigningKey `name` with `spec`; the namespace's name
/// and an API for SigningKeys in it.
async fn namespace_with_key(name: &str, spec: Value) -> (String, Api<SigningKey>) {
    let TestNamespace { name: ns, client } = test_namespace().await;
    let api = Api::<SigningKey>::namespaced(client, &ns);
    create_signing_key(&api, name, spec).await;
    (ns, api)
}

/// A namespace of one's own holding the SigningKey `k` whose status lists a retired, the
/// active and a pending kid; its name and an API for SigningKeys in it.
async fn key_with_three_kids() -> (String, Api<SigningKey>) {
    let (ns, api) = namespace_with_key("k", json!({"algorithm": "EdDSA"})).await;
    set_status(&api, "k", three_key_status(Timestamp::now())).await;
    (ns, api)
}

/// `jwks-operator revoke k -n <ns> --kid <kid>...` with `flags` after the kids.
async fn revoke_k(ns: &str, kids: &[&str], flags: &[&str]) -> CommandOutput {
    let mut args = vec!["revoke", "k", "-n", ns];
    for kid in kids {
        args.extend(["--kid", kid]);
    }
    args.extend_from_slice(flags);
    cli(&args).await
}

/// The revoke annotation of the SigningKey `k` as stored now.
async fn revoked(api: &Api<SigningKey>) -> Option<String> {
    annotation(&api.get("k").await.unwrap(), REVOKE_ANNOTATION)
}

fn annotation(key: &SigningKey, name: &str) -> Option<String> {
    key.metadata.annotations.as_ref()?.get(name).cloned()
}

#[tokio::test]
async fn rotate_sets_the_annotation_and_a_second_rotate_changes_it() {
    let (ns, api) = namespace_with_key(
        "api-tokens",
        json!({"algorithm": "ES256", "rotation": {"interval": "720h", "prePublish": "90m"}}),
    )
    .await;

    let before = Timestamp::now();
    let out = cli(&["rotate", "api-tokens", "-n", &ns]).await;
    assert_success(&out);
    assert_eq!(
        out.stdout,
        format!(
            "signingkey {ns}/api-tokens: rotation requested (the new key signs after prePublish 1h30m)\n"
        )
    );
    let key = api.get("api-tokens").await.unwrap();
    let first = annotation(&key, ROTATE_ANNOTATION).expect("rotate annotation set");
    let at: Timestamp = first
        .parse()
        .unwrap_or_else(|e| panic!("{first:?} is not RFC 3339: {e}"));
    assert!(first.ends_with('Z') && first.contains('.'), "{first:?}");
    assert!(at >= before.checked_sub(SignedDuration::from_secs(1)).unwrap());
    let managers = support::managers(&key.metadata);
    assert!(managers.contains(&"jwks-operator-cli"), "{managers:?}");

    let out = cli(&["rotate", "api-tokens", "-n", &ns]).await;
    assert_success(&out);
    let second = annotation(&api.get("api-tokens").await.unwrap(), ROTATE_ANNOTATION).unwrap();
    assert_ne!(
        second, first,
        "a second rotation must change the annotation"
    );
    assert!(second.parse::<Timestamp>().unwrap() > at);
}

#[tokio::test]
async fn rotate_without_a_rotation_spec_reports_the_default_pre_publish() {
    let (ns, _) = namespace_with_key("manual", json!({"algorithm": "EdDSA"})).await;

    let out = cli(&["rotate", "manual", "--namespace", &ns]).await;

    assert_success(&out);
    assert!(
        out.stdout
            .ends_with("(the new key signs after prePublish 1h)\n"),
        "{out}"
    );
}

#[tokio::test]
async fn rotate_of_a_missing_signing_key_fails_without_creating_it() {
    let TestNamespace { name: ns, client } = test_namespace().await;
    let api = Api::<SigningKey>::namespaced(client, &ns);

    let out = cli(&["rotate", "ghost", "-n", &ns]).await;

    assert_ghost_not_found(&out, &ns);
    assert!(api.get_opt("ghost").await.unwrap().is_none());
}

#[tokio::test]
async fn revoke_adds_kids_as_a_sorted_union_with_the_annotation() {
    let (ns, api) = key_with_three_kids().await;
    // A kid revoked earlier that the operator has since dropped from the status.
    api.patch(
        "k",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {REVOKE_ANNOTATION: "gone-kid"}}})),
    )
    .await
    .unwrap();

    let out = revoke_k(&ns, &["retired-kid"], &[]).await;
    assert_success(&out);
    assert_eq!(
        out.stdout,
        format!("signingkey {ns}/k: revoked retired-kid\n")
    );
    assert_eq!(revoked(&api).await.as_deref(), Some("gone-kid,retired-kid"));

    let out = revoke_k(&ns, &["pending-kid", "retired-kid", "pending-kid"], &[]).await;
    assert_success(&out);
    assert!(
        out.stdout.contains("revoked pending-kid\n")
            && out.stdout.contains("already revoked retired-kid\n"),
        "{out}"
    );
    assert!(
        out.stderr.is_empty(),
        "no warning without the active kid: {out}"
    );
    assert_eq!(
        revoked(&api).await.as_deref(),
        Some("gone-kid,pending-kid,retired-kid")
    );
}

#[tokio::test]
async fn revoke_refuses_an_unknown_kid_unless_forced() {
    let (ns, api) = key_with_three_kids().await;

    let out = revoke_k(&ns, &["typo-kid", "retired-kid"], &[]).await;

    let line = one_line_failure(&out);
    assert!(line.contains("typo-kid"), "{line}");
    assert!(
        line.contains("known kids: retired-kid, active-kid, pending-kid"),
        "{line}"
    );
    assert!(line.contains("--force"), "{line}");
    assert_eq!(
        revoked(&api).await,
        None,
        "a refused revoke must not write anything"
    );

    let out = revoke_k(&ns, &["typo-kid"], &["--force"]).await;
    assert_success(&out);
    assert_eq!(revoked(&api).await.as_deref(), Some("typo-kid"));
}

#[tokio::test]
async fn revoke_of_the_active_kid_warns_that_a_fresh_key_takes_over() {
    let (ns, api) = key_with_three_kids().await;

    let out = revoke_k(&ns, &["active-kid"], &[]).await;

    assert_success(&out);
    assert_eq!(
        out.stdout,
        format!("signingkey {ns}/k: revoked active-kid\n")
    );
    assert!(
        out.stderr
            .starts_with("warning: active-kid is the active key")
            && out
                .stderr
                .contains("a fresh key will be generated and activated immediately"),
        "{out}"
    );
    assert_eq!(revoked(&api).await.as_deref(), Some("active-kid"));
}

#[tokio::test]
async fn revoke_of_a_missing_signing_key_fails_with_one_line() {
    let TestNamespace { name: ns, .. } = test_namespace().await;

    let out = cli(&["revoke", "ghost", "-n", &ns, "--kid", "a"]).await;

    assert_ghost_not_found(&out, &ns);
}

#[tokio::test]
async fn status_shows_the_kids_states_and_ready_condition_the_operator_wrote() {
    let (ns, api) = namespace_with_key(
        "api-tokens",
        json!({
            "algorithm": "EdDSA",
            "secretName": "api-tokens-keys",
            "rotation": {"interval": "720h", "prePublish": "1h", "gracePeriod": "24h"},
        }),
    )
    .await;
    create_signing_key(&api, "fresh", json!({"algorithm": "ES384"})).await;
    set_status(&api, "api-tokens", three_key_status(Timestamp::now())).await;

    let out = cli(&["status", "api-tokens", "-n", &ns]).await;
    assert_success(&out);
    let text = &out.stdout;
    for expected in [
        "Algorithm:     EdDSA\n",
        "Secret:        api-tokens-keys\n",
        "Rotation:      every 720h, prePublish 1h, gracePeriod 24h\n",
        "Active kid:    active-kid\n",
        "(in 29d 23h)\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let row = |kid: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(kid))
            .unwrap_or_else(|| panic!("no row for {kid} in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("retired-kid"),
        "retired-kid Retired 2d ago 1d 23h ago 2h ago in 21h 59m"
    );
    assert_eq!(row("active-kid"), "active-kid Active 3h ago 2h ago - -");
    assert!(
        row("pending-kid").starts_with("pending-kid Pending "),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Ready", "True", "KeyActive", "active-kid", "signs"]),
        "{text}"
    );

    let out = cli(&["status", "-n", &ns]).await;
    assert_success(&out);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "NAME",
                "ALGORITHM",
                "ACTIVE",
                "KID",
                "KEYS",
                "NEXT",
                "ROTATION",
                "READY"
            ],
            vec![
                "api-tokens",
                "EdDSA",
                "active-kid",
                "3",
                "in",
                "29d",
                "23h",
                "True",
                "(KeyActive)"
            ],
            vec!["fresh", "ES384", "-", "-", "manual", "-"],
        ],
        "{out}"
    );
}

#[tokio::test]
async fn status_of_a_missing_signing_key_fails_with_one_line() {
    let TestNamespace { name: ns, .. } = test_namespace().await;

    let out = cli(&["status", "ghost", "-n", &ns]).await;

    assert_ghost_not_found(&out, &ns);
}

#[tokio::test]
async fn namespace_comes_from_the_flag_or_else_the_kubeconfig_context() {
    let TestNamespace { name: ns_a, client } = test_namespace().await;
    let TestNamespace { name: ns_b, .. } = test_namespace().await;
    let api_a = Api::<SigningKey>::namespaced(client.clone(), &ns_a);
    let api_b = Api::<SigningKey>::namespaced(client, &ns_b);
    create_signing_key(&api_a, "shared", json!({"algorithm": "ES256"})).await;
    create_signing_key(&api_b, "shared", json!({"algorithm": "PS256"})).await;

    let out = cli(&["status", "shared", "-n", &ns_b]).await;
    assert_success(&out);
    assert!(out.stdout.contains("Algorithm:     PS256\n"), "{out}");

    let out = cli(&["rotate", "shared", "-n", &ns_b]).await;
    assert_success(&out);
    assert!(annotation(&api_b.get("shared").await.unwrap(), ROTATE_ANNOTATION).is_some());
    assert_eq!(
        annotation(&api_a.get("shared").await.unwrap(), ROTATE_ANNOTATION),
        None,
        "rotate -n {ns_b} touched {ns_a}"
    );

    let context_ns = ns_a.clone();
    let kubeconfig = kubeconfig_variant_async(move |config| {
        for context in config["contexts"].as_array_mut().unwrap() {
            context["context"]["namespace"] = json!(context_ns);
        }
    })
    .await;
    let out = jwks_operator(&kubeconfig, &["status"]).await;
    assert_success(&out);
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(
        rows[0].split_whitespace().take(2).eq(["shared", "ES256"]),
        "{out}"
    );
    let out = jwks_operator(&kubeconfig, &["status", "shared", "-n", &ns_b]).await;
    assert!(
        out.stdout.contains("PS256"),
        "-n overrides the context: {out}"
    );

    let out = jwks_operator(&kubeconfig, &["status", "-A"]).await;
    assert_success(&out);
    assert!(out.stdout.starts_with("NAMESPACE "), "{out}");
    for (ns, alg) in [(&ns_a, "ES256"), (&ns_b, "PS256")] {
        assert!(
            out.stdout.lines().any(|l| l.split_whitespace().take(3).eq([
                ns.as_str(),
                "shared",
                alg
            ])),
            "no row for {ns}/shared in:\n{out}"
        );
    }
}

#[tokio::test]
async fn status_of_an_empty_namespace_says_so_on_stderr() {
    let TestNamespace { name: ns, .. } = test_namespace().await;

    let out = cli(&["status", "-n", &ns]).await;

    assert_success(&out);
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        out.stderr,
        format!("No SigningKeys found in namespace {ns}.\n")
    );
}

#[tokio::test]
async fn a_forbidden_request_fails_with_one_line() {
    let (ns, _) = namespace_with_key("k", json!({"algorithm": "ES256"})).await;
    // The admin may impersonate; a user nobody granted anything may do nothing.
    let kubeconfig = kubeconfig_variant_async(|config| {
        for user in config["users"].as_array_mut().unwrap() {
            user["user"]["as"] = json!("nobody-in-particular");
        }
    })
    .await;

    for args in [
        vec!["status", "k", "-n", &ns],
        vec!["rotate", "k", "-n", &ns],
        vec!["revoke", "k", "-n", &ns, "--kid", "a"],
    ] {
        let out = jwks_operator(&kubeconfig, &args).await;
        let line = one_line_failure(&out);
        assert!(
            line.contains(r#"signingkeys.jwks-operator.io "k" is forbidden"#),
            "{args:?}: {line}"
        );
        assert!(line.contains("nobody-in-particular"), "{args:?}: {line}");
    }
}

#[tokio::test]
async fn commands_without_a_reachable_cluster_fail_with_one_line() {
    let dir = support::new_temp_dir("cli-no-cluster").unwrap();
    let missing = dir.join("no-such-kubeconfig");
    // A port that was just free: connecting to it is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = dir.join("unreachable");
    std::fs::write(
        &unreachable,
        serde_json::to_vec(&json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": format!("https://127.0.0.1:{port}")}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
            "current-context": "x",
        }))
        .unwrap(),
    )
    .unwrap();

    let out = jwks_operator(&missing, &["status"]).await;
    let line = one_line_failure(&out);
    assert!(
        line.contains("kubeconfig") && line.contains("no-such-kubeconfig"),
        "{line}"
    );

    for args in [
        &["status"][..],
        &["status", "k"],
        &["rotate", "k"],
        &["revoke", "k", "--kid", "a"],
    ] {
        let out = jwks_operator(&unreachable, args).await;
        let line = one_line_failure(&out);
        assert!(
            line.contains(&format!(
                "cannot reach the Kubernetes API server at https://127.0.0.1:{port}"
            )),
            "{args:?}: {line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let out = jwks_operator(Path::new("/nonexistent"), &["status", "k", "-A"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let out = jwks_operator(Path::new("/nonexistent"), &["revoke", "k"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("--kid"), "{out}");
    let out = jwks_operator(Path::new("/nonexistent"), &["revoke", "k", "--kid", "a,b"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("invalid kid \"a,b\""), "{out}");
}
