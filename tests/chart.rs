//! The Helm chart (`charts/jwks-operator`): `helm lint`, the rendered manifests checked by
//! kubeconform against JSON schemas generated from the test apiserver's own OpenAPI, a
//! server-side apply of the rendered chart to that apiserver, and the RBAC it grants, asked of
//! the apiserver with `kubectl auth can-i`.
//!
//! helm and kubeconform come from `hack/chart/build-tools.sh` (built from the Go module proxy
//! into a versioned cache; instant when cached). `make test` builds them before `cargo test`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::{FIELD_MANAGER, TIMEOUT, kubectl, repo_root, test_namespace, wait_for};

const CHART: &str = "charts/jwks-operator";

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = files(&repo_root().join("crds"));
    let in_chart = files(&chart_dir().join("crds"));
    assert!(!generated.is_empty(), "crds/ holds no CRD");
    assert_eq!(
        in_chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "{CHART}/crds must hold exactly the files of crds/ (cp crds/*.yaml {CHART}/crds/)"
    );
    for (name, bytes) in &generated {
        assert!(
            in_chart[name] == *bytes,
            "{CHART}/crds/{name} differs from crds/{name}; copy it again (cp crds/*.yaml {CHART}/crds/)"
        );
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value =
        serde_saphyr::from_str(&fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "{CHART}/Chart.yaml appVersion must follow Cargo.toml's version (the default image tag)"
    );
}

#[test]
fn chart_passes_helm_lint_in_both_modes() {
    for sets in [
        &[][..],
        &["watchNamespace=team-a"],
        &[
            "networkPolicy.enabled=true",
            "serviceMonitor.enabled=true",
            "replicas=1",
            "leaderElection.enabled=false",
        ],
    ] {
        let mut args = vec!["lint", "--strict"];
        let set_args: Vec<String> = sets.iter().map(|s| format!("--set={s}")).collect();
        args.extend(set_args.iter().map(String::as_str));
        let chart = chart_dir();
        args.push(chart.to_str().expect("utf-8 path"));
        let out = run(helm().args(&args));
        assert!(
            out.ok && out.stdout.contains("0 chart(s) failed"),
            "helm {}: {out}",
            args.join(" ")
        );
    }
}

#[test]
fn deployment_runs_the_operator_with_the_documented_flags() {
    let docs = render("rel", "ops", &[]);
    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let image = "ghcr.io/jwks-operator/jwks-operator:0.1.0";
    assert_eq!(
        container["image"], image,
        "the image tag defaults to appVersion"
    );
    assert_eq!(
        strings(&container["args"]),
        [
            "run",
            "--log-format",
            "json",
            "--metrics-listen",
            "0.0.0.0:9090",
            "--leader-election",
            "--leader-election-namespace",
            "$(POD_NAMESPACE)",
            "--server-image",
            image,
        ]
    );
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let from = &e["valueFrom"]["fieldRef"]["fieldPath"];
            let value = from.as_str().or(e["value"].as_str()).unwrap_or_default();
            (e["name"].as_str().unwrap_or_default().into(), value.into())
        })
        .collect();
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(
        container["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}})
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "rel-jwks-operator");

    let service = only(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let pdb = only(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for kind in ["ServiceMonitor", "NetworkPolicy"] {
        assert!(of_kind(&docs, kind).is_empty(), "{kind} is off by default");
    }

    // One namespace, one replica, own server image: --namespace, no PodDisruptionBudget.
    let docs = render(
        "rel",
        "ops",
        &[
            "watchNamespace=team-a",
            "replicas=1",
            "serverImage=registry.example/jwks:1",
        ],
    );
    let args =
        strings(&only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.ends_with(&[
        "--server-image".into(),
        "registry.example/jwks:1".into(),
        "--namespace".into(),
        "team-a".into()
    ]));
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());

    // Without leader election there is no Lease Role and no --leader-election flag.
    let docs = render(
        "rel",
        "ops",
        &["replicas=1", "leaderElection.enabled=false"],
    );
    let args =
        strings(&only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(!args.iter().any(|a| a.starts_with("--leader-election")));
    assert!(of_kind(&docs, "Role").is_empty());
}

#[test]
fn several_replicas_without_leader_election_are_refused() {
    let out = helm_template(
        "rel",
        "ops",
        &["replicas=2", "leaderElection.enabled=false"],
    );
    assert!(!out.ok, "rendered anyway: {out}");
    assert!(
        out.stderr.contains("needs leaderElection.enabled=true"),
        "{out}"
    );
}

#[test]
fn rbac_grants_exactly_what_the_operator_does() {
    let expected = json!([
        {"apiGroups": ["jwks-operator.io"], "resources": ["signingkeys", "jwkspublications"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["jwks-operator.io"], "resources": ["signingkeys/status", "jwkspublications/status"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]);
    let lease_rules = json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]},
    ]);

    // Copies in other namespaces (cluster-wide installs only): Namespaces, and the finalizer.
    let copy_rules = json!([
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["jwks-operator.io"], "resources": ["jwkspublications"], "verbs": ["patch"]},
    ]);
    let mut cluster_rules = expected.as_array().unwrap().clone();
    cluster_rules.extend(copy_rules.as_array().unwrap().iter().cloned());

    let docs = render("rel", "ops", &[]);
    assert_eq!(only(&docs, "ClusterRole")["rules"], json!(cluster_rules));
    let binding = only(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "rel-jwks-operator");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rel-jwks-operator", "namespace": "ops"}])
    );
    let lease_role = only(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(lease_role["rules"], lease_rules);
    assert!(!serde_json::to_string(&docs).unwrap().contains("\"*\""));

    let docs = render("rel", "ops", &["watchNamespace=team-a"]);
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let roles: BTreeMap<String, Value> = of_kind(&docs, "Role")
        .into_iter()
        .map(|r| {
            (
                r["metadata"]["namespace"].as_str().unwrap().to_string(),
                r["rules"].clone(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        BTreeMap::from([("ops".into(), lease_rules), ("team-a".into(), expected)])
    );
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["subjects"][0]["namespace"], "ops");
    }

    let docs = render("rel", "ops", &["rbac.create=false"]);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "rbac.create=false still renders a {kind}"
        );
    }
}

#[tokio::test]
async fn rendered_chart_conforms_to_the_apiserver_schemas() {
    let schemas = schemas_dir().await;
    let dir = scratch("rendered");
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("cluster-wide", &[], &[]),
        ("one-namespace", &["watchNamespace=team-a"], &[]),
        (
            // The test apiserver has no prometheus-operator CRDs, so no ServiceMonitor schema;
            // `servicemonitor_selects_the_metrics_service` checks that object instead.
            "everything-on",
            &[
                "networkPolicy.enabled=true",
                "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
                "networkPolicy.metrics.from[0].namespaceSelector.matchLabels.name=monitoring",
                "serviceMonitor.enabled=true",
                "podAnnotations.a=b",
                "nodeSelector.kubernetes\\.io/os=linux",
                "tolerations[0].operator=Exists",
                "imagePullSecrets[0].name=pull",
                "priorityClassName=high",
                "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
                "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey=kubernetes.io/hostname",
            ],
            &["ServiceMonitor"],
        ),
    ];
    for (case, sets, skip) in cases {
        let out = helm_template("rel", "ops", sets);
        assert!(out.ok, "helm template ({case}): {out}");
        let file = dir.join(format!("{case}.yaml"));
        fs::write(&file, &out.stdout).unwrap();
        let documents = parse_documents(&out.stdout).len();
        let summary = kubeconform(&schemas, &file, skip);
        assert_eq!(
            (
                summary.valid,
                summary.invalid,
                summary.errors,
                summary.skipped
            ),
            (documents - skip.len(), 0, 0, skip.len()),
            "kubeconform ({case}): {}",
            summary.output
        );
    }

    // The CRDs that `helm install` applies from crds/, against CustomResourceDefinition.
    let crds = chart_dir().join("crds");
    let summary = kubeconform(&schemas, &crds, &[]);
    assert_eq!(
        (
            summary.valid,
            summary.invalid + summary.errors + summary.skipped
        ),
        (files(&crds).len(), 0),
        "kubeconform (crds): {}",
        summary.output
    );

    // The schemas are strict: a misspelt field and a wrong type are refused.
    let bad = dir.join("misspelt-and-mistyped.yaml");
    fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n  \
         selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
         spec: {containers: [{name: c, image: i}]}\n---\napiVersion: v1\nkind: Service\n\
         metadata: {name: x}\nspec: {ports: [{port: \"9090\"}]}\n",
    )
    .unwrap();
    let summary = kubeconform(&schemas, &bad, &[]);
    assert_eq!(summary.invalid, 2, "{}", summary.output);
    assert!(summary.output.contains("replica"), "{}", summary.output);
}

#[tokio::test]
async fn examples_conform_to_the_crd_schemas() {
    let schemas = schemas_dir().await;
    let mut examples: Vec<PathBuf> = fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    for example in examples {
        let text = fs::read_to_string(&example).unwrap();
        let summary = kubeconform(&schemas, &example, &[]);
        assert_eq!(
            (
                summary.valid,
                summary.invalid + summary.errors + summary.skipped
            ),
            (parse_documents(&text).len(), 0),
            "{}: {}",
            example.display(),
            summary.output
        );
    }
}

#[test]
fn servicemonitor_selects_the_metrics_service() {
    let docs = render(
        "rel",
        "ops",
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prom",
        ],
    );
    let monitor = only(&docs, "ServiceMonitor");
    let service = only(&docs, "Service");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value);
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["ops"])
    );
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "30s"}])
    );
}

#[tokio::test]
async fn cluster_wide_install_is_accepted_and_grants_least_privilege() {
    let release = test_namespace().await.name;
    let elsewhere = test_namespace().await.name;
    restrict_pod_security(&release).await;
    apply_chart("wide", &release, &["networkPolicy.enabled=true"]).await;
    // Two operator pods pass the `restricted` Pod Security Standard of their namespace.
    wait_for_pods(&release, "wide", 2).await;

    let can = Access::new(&release, "wide-jwks-operator");
    for ns in [&release, &elsewhere] {
        for verb in ["get", "list", "watch", "create", "patch"] {
            can.assert(true, verb, "secrets", ns).await;
        }
        can.assert(false, "delete", "secrets", ns).await;
        can.assert(false, "update", "secrets", ns).await;
        can.assert(true, "patch", "signingkeys.jwks-operator.io/status", ns)
            .await;
        can.assert(false, "update", "signingkeys.jwks-operator.io/status", ns)
            .await;
        can.assert(
            true,
            "patch",
            "jwkspublications.jwks-operator.io/status",
            ns,
        )
        .await;
        can.assert(true, "watch", "signingkeys.jwks-operator.io", ns)
            .await;
        can.assert(false, "patch", "signingkeys.jwks-operator.io", ns)
            .await;
        can.assert(false, "delete", "signingkeys.jwks-operator.io", ns)
            .await;
        // The copies' finalizer; never an update or a delete of a publication.
        can.assert(true, "patch", "jwkspublications.jwks-operator.io", ns)
            .await;
        can.assert(false, "update", "jwkspublications.jwks-operator.io", ns)
            .await;
        can.assert(false, "delete", "jwkspublications.jwks-operator.io", ns)
            .await;
        can.assert(true, "create", "events.events.k8s.io", ns).await;
        can.assert(true, "patch", "events.events.k8s.io", ns).await;
        can.assert(false, "create", "events", ns).await; // core/v1 Events: not used
        can.assert(true, "delete", "configmaps", ns).await; // stale ConfigMaps after a rename
        can.assert(true, "delete", "deployments.apps", ns).await;
        can.assert(true, "delete", "services", ns).await;
        can.assert(false, "list", "pods", ns).await;
        can.assert(false, "create", "pods", ns).await;
    }
    can.assert(true, "list", "secrets", "--all-namespaces")
        .await;
    can.assert(true, "create", "leases.coordination.k8s.io", &release)
        .await;
    can.assert(true, "patch", "leases.coordination.k8s.io", &release)
        .await;
    can.assert(false, "delete", "leases.coordination.k8s.io", &release)
        .await;
    can.assert(false, "create", "leases.coordination.k8s.io", &elsewhere)
        .await;
    // Copies: Namespaces are listed and watched (labels and consent), never changed.
    can.assert(true, "watch", "namespaces", "--all-namespaces")
        .await;
    can.assert(false, "patch", "namespaces", "--all-namespaces")
        .await;
    can.assert(false, "get", "namespaces", "--all-namespaces")
        .await;
}

#[tokio::test]
async fn single_namespace_install_is_confined_to_its_namespace() {
    let release = test_namespace().await.name;
    let watched = test_namespace().await.name;
    let other = test_namespace().await.name;
    restrict_pod_security(&release).await;
    apply_chart("one", &release, &[&format!("watchNamespace={watched}")]).await;
    wait_for_pods(&release, "one", 2).await;

    let can = Access::new(&release, "one-jwks-operator");
    for verb in ["get", "list", "watch", "create", "patch"] {
        can.assert(true, verb, "secrets", &watched).await;
    }
    can.assert(false, "delete", "secrets", &watched).await;
    can.assert(
        true,
        "patch",
        "signingkeys.jwks-operator.io/status",
        &watched,
    )
    .await;
    can.assert(true, "create", "events.events.k8s.io", &watched)
        .await;
    can.assert(true, "create", "deployments.apps", &watched)
        .await;
    can.assert(false, "list", "pods", &watched).await;
    for ns in [&other, &release] {
        can.assert(false, "get", "secrets", ns).await;
        can.assert(false, "list", "signingkeys.jwks-operator.io", ns)
            .await;
        can.assert(false, "create", "events.events.k8s.io", ns)
            .await;
        can.assert(false, "create", "configmaps", ns).await;
    }
    can.assert(false, "list", "secrets", "--all-namespaces")
        .await;
    can.assert(true, "create", "leases.coordination.k8s.io", &release)
        .await;
    can.assert(true, "get", "leases.coordination.k8s.io", &release)
        .await;
    can.assert(false, "create", "leases.coordination.k8s.io", &watched)
        .await;
    // A namespaced install makes no copies: no Namespaces, no finalizer.
    can.assert(false, "list", "namespaces", "--all-namespaces")
        .await;
    can.assert(
        false,
        "patch",
        "jwkspublications.jwks-operator.io",
        &watched,
    )
    .await;
}

#[tokio::test]
async fn secret_access_can_be_narrowed_to_named_namespaces() {
    let release = test_namespace().await.name;
    let team = test_namespace().await.name;
    let other = test_namespace().await.name;
    apply_chart(
        "narrow",
        &release,
        &[&format!("secretNamespaces={{{team}}}")],
    )
    .await;
    let rendered = helm_template(
        "narrow",
        &release,
        &[&format!("secretNamespaces={{{team}}}")],
    );
    assert!(
        rendered
            .stdout
            .contains(&format!("--secret-namespaces\n            - \"{team}\"")),
        "the operator is told: {rendered}"
    );

    let can = Access::new(&release, "narrow-jwks-operator");
    for verb in ["get", "list", "watch", "create", "patch"] {
        can.assert(true, verb, "secrets", &team).await;
        can.assert(false, verb, "secrets", &other).await;
    }
    can.assert(false, "list", "secrets", "--all-namespaces")
        .await;
    // Everything else stays cluster-wide.
    can.assert(true, "list", "signingkeys.jwks-operator.io", &other)
        .await;
    can.assert(true, "patch", "configmaps", &other).await;
}

#[test]
fn secret_namespaces_with_a_watched_namespace_is_refused() {
    let out = helm_template("both", "ops", &["watchNamespace=a", "secretNamespaces={b}"]);
    assert!(!out.ok, "rendered anyway: {out}");
    assert!(
        out.stderr
            .contains("secretNamespaces is for cluster-wide installs"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// helm and kubeconform

fn chart_dir() -> PathBuf {
    repo_root().join(CHART)
}

/// `target/tmp/chart/<name>/`: rendered manifests and schemas, kept for a look after a failure.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chart")
        .join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// helm, with its cache, config and data homes under target/ rather than the user's.
fn helm() -> Command {
    support::helm(&scratch("helm-home"))
}

/// `helm template RELEASE charts/jwks-operator -n NAMESPACE --set ...`.
fn helm_template(release: &str, namespace: &str, sets: &[&str]) -> Output {
    let mut cmd = helm();
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for set in sets {
        cmd.arg(format!("--set={set}"));
    }
    run(&mut cmd)
}

/// The rendered chart as JSON documents; panics if it does not render.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let out = helm_template(release, namespace, sets);
    assert!(out.ok, "helm template {sets:?}: {out}");
    parse_documents(&out.stdout)
}

struct Summary {
    valid: usize,
    invalid: usize,
    errors: usize,
    skipped: usize,
    output: String,
}

/// `kubeconform -strict -summary` with the generated schemas only (nothing is fetched).
fn kubeconform(schemas: &Path, manifest: &Path, skip: &[&str]) -> Summary {
    let mut cmd = Command::new(&support::chart_tools().kubeconform);
    cmd.args(["-strict", "-summary", "-schema-location"])
        .arg(schemas.join("{{ .ResourceKind }}{{ .KindSuffix }}.json"));
    if !skip.is_empty() {
        cmd.args(["-skip", &skip.join(",")]);
    }
    let out = run(cmd.arg(manifest));
    // "Summary: 9 resources found in 1 file - Valid: 9, Invalid: 0, Errors: 0, Skipped: 0"
    let count = |label: &str| {
        out.stdout
            .split(&format!("{label}: "))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` count in kubeconform's summary: {out}"))
    };
    let summary = Summary {
        valid: count("Valid"),
        invalid: count("Invalid"),
        errors: count("Errors"),
        skipped: count("Skipped"),
        output: out.to_string(),
    };
    assert_eq!(
        out.ok,
        summary.invalid + summary.errors == 0,
        "kubeconform's exit status disagrees with its summary: {out}"
    );
    summary
}

// ---------------------------------------------------------------------------------------------
// JSON schemas from the apiserver's OpenAPI

/// Per-kind JSON schemas for kubeconform, generated once per test binary from the shared
/// control plane's `/openapi/v2` (built-in kinds and the CRDs it serves).
async fn schemas_dir() -> PathBuf {
    static DIR: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    DIR.get_or_init(|| async {
        support::ensure_crds(&support::client().await).await;
        let openapi = wait_for(TIMEOUT, "the CRD kinds in /openapi/v2", || async {
            let out = kubectl(&["get", "--raw", "/openapi/v2"]).await;
            if !out.success() {
                return Err(out.to_string().into());
            }
            let openapi: Value = serde_json::from_str(&out.stdout)?;
            let has = |kind: &str| {
                openapi["definitions"]
                    .as_object()
                    .is_some_and(|d| d.keys().any(|k| k.ends_with(kind)))
            };
            if has(".v1alpha1.SigningKey") && has(".v1alpha1.JwksPublication") {
                Ok(openapi)
            } else {
                Err("not published yet".into())
            }
        })
        .await;
        let schemas = kubeconform_schemas(&openapi);
        for name in [
            "deployment-apps-v1.json",
            "clusterrole-rbac-v1.json",
            "signingkey-jwks-operator-v1alpha1.json",
        ] {
            assert!(schemas.contains_key(name), "no {name} among the schemas");
        }
        let files: BTreeMap<String, Vec<u8>> = schemas
            .iter()
            .map(|(name, schema)| (name.clone(), serde_json::to_vec_pretty(schema).unwrap()))
            .collect();
        // Named by their content under target/: reruns reuse them and nothing piles up.
        let mut hasher = std::hash::DefaultHasher::new();
        files.hash(&mut hasher);
        let root = scratch("kubeconform-schemas");
        let dir = root.join(format!("{:016x}", hasher.finish()));
        if !dir.is_dir() {
            let tmp = root.join(format!(".partial-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).unwrap();
            for (name, bytes) in &files {
                fs::write(tmp.join(name), bytes).unwrap();
            }
            // Fails only if a concurrent run got there first, with the same content.
            if fs::rename(&tmp, &dir).is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        dir
    })
    .await
    .clone()
}

/// Converts an OpenAPI v2 document into standalone, strict JSON schemas, one per
/// group/version/kind, named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
/// template expects (`deployment-apps-v1.json`, `service-v1.json`, `role-rbac-v1.json`).
///
/// Standalone: each file carries the definitions it references under `definitions`, so
/// `#/definitions/...` references resolve inside it (recursive types such as the CRD schema's
/// JSONSchemaProps included). Strict (like kubeconform's `-strict` schemas): an object schema
/// with `properties` gets `additionalProperties: false` unless it keeps unknown fields.
fn kubeconform_schemas(openapi: &Value) -> BTreeMap<String, Value> {
    let definitions = openapi["definitions"]
        .as_object()
        .expect("the OpenAPI document has definitions");
    let mut schemas = BTreeMap::new();
    for (name, definition) in definitions {
        let Some(gvks) = definition["x-kubernetes-group-version-kind"].as_array() else {
            continue;
        };
        let mut reachable = BTreeSet::new();
        let mut queue = vec![definition];
        while let Some(schema) = queue.pop() {
            let mut refs = Vec::new();
            collect_refs(schema, &mut refs);
            for r in refs {
                if reachable.insert(r.clone()) {
                    queue.push(
                        definitions
                            .get(&r)
                            .unwrap_or_else(|| panic!("{name} refers to a missing {r}")),
                    );
                }
            }
        }
        let mut schema = strict(name, definition);
        schema["definitions"] = reachable
            .iter()
            .map(|r| (r.clone(), strict(r, &definitions[r])))
            .collect::<serde_json::Map<_, _>>()
            .into();
        for gvk in gvks {
            let (group, version, kind) = (
                gvk["group"].as_str().unwrap_or_default(),
                gvk["version"].as_str().unwrap_or_default(),
                gvk["kind"].as_str().unwrap_or_default(),
            );
            // kubeconform's KindSuffix: "-<first label of the group>-<version>", "-v1" for core.
            let suffix = match group.split('.').next() {
                Some(first) if !group.is_empty() => format!("-{first}-{version}"),
                _ => format!("-{version}"),
            };
            let file = format!("{kind}{suffix}.json").to_lowercase();
            let previous = schemas.insert(file.clone(), schema.clone());
            assert!(previous.is_none(), "two definitions map to {file}");
        }
    }
    schemas
}

/// The names behind every `$ref: "#/definitions/NAME"` in `schema`.
fn collect_refs(schema: &Value, refs: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(r)) => refs.push(
                        r.strip_prefix("#/definitions/")
                            .unwrap_or_else(|| panic!("unexpected $ref {r}"))
                            .to_string(),
                    ),
                    _ => collect_refs(value, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// One definition made strict, with the apiserver's decoding quirks that OpenAPI v2 cannot say.
fn strict(name: &str, schema: &Value) -> Value {
    match name {
        // resource.Quantity decodes from a JSON number too (`cpu: 1`), though v2 says string.
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            return json!({"oneOf": [{"type": "string"}, {"type": "number"}]});
        }
        // intstr.IntOrString is `type: string, format: int-or-string` in v2.
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            return json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        }
        _ => {}
    }
    fn walk(schema: &Value) -> Value {
        match schema {
            Value::Object(map) => {
                if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                    || map.get("format").and_then(Value::as_str) == Some("int-or-string")
                {
                    return json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
                }
                let mut out: serde_json::Map<String, Value> =
                    map.iter().map(|(k, v)| (k.clone(), walk(v))).collect();
                let keeps_unknown =
                    map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                if map.contains_key("properties")
                    && !map.contains_key("additionalProperties")
                    && !keeps_unknown
                {
                    out.insert("additionalProperties".into(), Value::Bool(false));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(walk).collect()),
            other => other.clone(),
        }
    }
    walk(schema)
}

// ---------------------------------------------------------------------------------------------
// The control plane

/// Renders the chart for `namespace` and applies it with server-side apply; panics unless
/// every object is accepted.
async fn apply_chart(release: &str, namespace: &str, sets: &[&str]) {
    let out = helm_template(release, namespace, sets);
    assert!(out.ok, "helm template: {out}");
    let file = scratch("applied").join(format!("{release}.yaml"));
    fs::write(&file, &out.stdout).unwrap();
    let applied = kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        FIELD_MANAGER,
        "-f",
        file.to_str().unwrap(),
    ])
    .await;
    assert!(applied.success(), "kubectl apply --server-side: {applied}");
    let objects = parse_documents(&out.stdout).len();
    assert_eq!(
        applied.stdout.matches("serverside-applied").count(),
        objects,
        "{applied}"
    );
}

/// Enforces the `restricted` Pod Security Standard in `namespace`.
async fn restrict_pod_security(namespace: &str) {
    let out = kubectl(&[
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .await;
    assert!(out.success(), "{out}");
}

/// Waits until the controller-manager has created `count` pods of the release (there is no
/// kubelet: they stay Pending, but creating them passed admission).
async fn wait_for_pods(namespace: &str, release: &str, count: usize) {
    let selector = format!("app.kubernetes.io/instance={release}");
    wait_for(TIMEOUT, "the operator pods", || async {
        let out = kubectl(&[
            "get", "pods", "-n", namespace, "-l", &selector, "-o", "name",
        ])
        .await;
        let pods = out.stdout.lines().count();
        if pods == count {
            return Ok(());
        }
        let events = kubectl(&["get", "events", "-n", namespace]).await;
        let last: Vec<&str> = events.stdout.lines().rev().take(3).collect();
        Err(format!("{pods} pods; last events:\n{}", last.join("\n")).into())
    })
    .await;
}

/// `kubectl auth can-i` as a service account.
struct Access {
    user: String,
}

impl Access {
    fn new(namespace: &str, service_account: &str) -> Access {
        Access {
            user: format!("system:serviceaccount:{namespace}:{service_account}"),
        }
    }

    /// Asserts whether the account may `verb` the `resource` (`name.group[/subresource]`) in
    /// namespace `ns` (or `--all-namespaces`).
    async fn assert(&self, allowed: bool, verb: &str, resource: &str, ns: &str) {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(format!("--subresource={s}"))),
            None => (resource, None),
        };
        let as_user = format!("--as={}", self.user);
        let mut args = vec!["auth", "can-i", verb, resource, as_user.as_str()];
        if ns == "--all-namespaces" {
            args.push(ns);
        } else {
            args.extend(["-n", ns]);
        }
        args.extend(subresource.as_deref());
        let out = kubectl(&args).await;
        let answer = out.stdout.trim();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl {}: {out}",
            args.join(" ")
        );
        assert_eq!(
            answer == "yes",
            allowed,
            "{} {} {verb} {resource}{} in {ns}",
            self.user,
            if allowed { "cannot" } else { "can" },
            subresource.map(|s| format!(" ({s})")).unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
    command: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})\n--- stdout\n{}--- stderr\n{}",
            self.command,
            if self.ok { "succeeded" } else { "failed" },
            self.stdout,
            self.stderr
        )
    }
}

fn run(cmd: &mut Command) -> Output {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    }
}

/// The non-empty YAML documents of a stream, as JSON.
fn parse_documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(docs, kind).as_slice() {
        [one] => one,
        many => panic!("expected one {kind}, rendered {}", many.len()),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_string()
        })
        .collect()
}

/// File name -> bytes of every file in `dir`.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}
