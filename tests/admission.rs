//! Admission on the real apiserver: every invalid manifest under tests/admission/ is refused
//! with a message naming the offending field; every file in examples/ and every YAML block of
//! the README is accepted.

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::{
    PublicationBuilder, SigningKeyBuilder, kubectl, kubectl_apply, repo_root, test_namespace,
};

/// The `# expect: FIELD` header of a table file.
fn expected_field(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()))
        .trim()
        .to_owned()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let ns = test_namespace().await;
    let files = yaml_files("tests/admission/invalid");
    assert!(
        files.len() >= 30,
        "the admission table has only {} cases",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let field = expected_field(file);
        let path = file.to_string_lossy();
        let out = kubectl(&["create", "--dry-run=server", "-n", &ns.name, "-f", &path]).await;
        if out.success() {
            failures.push(format!("{}: accepted", file.display()));
        } else if !out.stderr.contains(&field) {
            failures.push(format!(
                "{}: refused without naming {field}:\n  {}",
                file.display(),
                out.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn forbidden_updates_are_refused_naming_the_field() {
    let ns = test_namespace().await;
    let files = yaml_files("tests/admission/updates");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let field = expected_field(file);
        let text = std::fs::read_to_string(file).unwrap();
        let (first, second) = text.split_once("\n---\n").expect("two documents");
        let dir = support::new_temp_dir("admission-update").unwrap();
        let (a, b) = (dir.join("first.yaml"), dir.join("second.yaml"));
        std::fs::write(&a, first).unwrap();
        std::fs::write(&b, second).unwrap();
        let created = kubectl_apply(&ns.name, &a, &[]).await;
        assert!(
            created.success(),
            "{}: the original was refused: {}",
            file.display(),
            created.stderr
        );
        let updated = kubectl_apply(&ns.name, &b, &[]).await;
        if updated.success() {
            failures.push(format!("{}: update accepted", file.display()));
        } else if !updated.stderr.contains(&field) {
            failures.push(format!(
                "{}: refused without naming {field}: {}",
                file.display(),
                updated.stderr.trim()
            ));
        }
        let deleted = kubectl(&["delete", "-n", &ns.name, "-f", &a.to_string_lossy()]).await;
        assert!(deleted.success(), "{}", deleted.stderr);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn algorithm_may_change_within_signing_algorithms() {
    let ns = test_namespace().await;
    let dir = support::new_temp_dir("admission-migrate").unwrap();
    // JSON is YAML: kubectl reads either.
    let manifest = |alg: &str| {
        SigningKeyBuilder::new("migrating")
            .algorithm(alg)
            .json()
            .to_string()
    };
    for alg in ["RS256", "ES256", "EdDSA"] {
        let file = dir.join(format!("{alg}.yaml"));
        std::fs::write(&file, manifest(alg)).unwrap();
        let out = kubectl_apply(&ns.name, &file, &[]).await;
        assert!(
            out.success(),
            "switching to {alg} was refused: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn every_example_is_accepted_by_dry_run_and_by_a_real_create() {
    let ns = test_namespace().await;
    let examples = yaml_files("examples");
    assert!(!examples.is_empty());
    for file in &examples {
        let dry = kubectl_apply(&ns.name, file, &["--dry-run=server"]).await;
        assert!(
            dry.success(),
            "{}: dry run refused: {}",
            file.display(),
            dry.stderr
        );
    }
    let out = kubectl_apply(&ns.name, &repo_root().join("examples"), &[]).await;
    assert!(
        out.success(),
        "kubectl apply -f examples/ failed: {}",
        out.stderr
    );
    let listed = kubectl(&[
        "get",
        "signingkeys,jwkspublications",
        "-n",
        &ns.name,
        "-o",
        "name",
    ])
    .await;
    assert!(listed.success(), "{}", listed.stderr);
    let names: Vec<&str> = listed.stdout.lines().collect();
    for expected in [
        "signingkey.jwks-operator.io/api-tokens",
        "jwkspublication.jwks-operator.io/main",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// Every YAML block of the README is a manifest the apiserver accepts (server-side dry run), so
/// what a reader copies works.
#[tokio::test]
async fn every_yaml_block_of_the_readme_is_accepted() {
    let ns = test_namespace().await;
    // The recipes include a Pod, which needs the namespace's default ServiceAccount.
    ns.default_service_account().await;
    let blocks: Vec<String> = support::readme_yaml_blocks()
        .into_iter()
        .filter(|(_, checked)| *checked == support::Checked::ByAdmission)
        .map(|(block, _)| block)
        .collect();
    assert!(blocks.len() >= 3, "the README shows manifests");
    let dir = support::new_temp_dir("readme-yaml").unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.join(format!("block-{i}.yaml"));
        std::fs::write(&path, block).unwrap();
        let out = kubectl_apply(&ns.name, &path, &["--dry-run=server"]).await;
        assert!(
            out.success(),
            "README YAML block {i} refused:\n{block}\n{}",
            out.stderr
        );
    }
}

/// What the server-name rule must not refuse: a dotted ConfigMap name while no Service takes it,
/// and `tlsSecretName: ""`, which GitOps templates render for "no TLS".
#[tokio::test]
async fn names_only_the_server_cannot_use_and_an_empty_tls_secret_are_accepted() {
    let ns = test_namespace().await;
    let dir = support::new_temp_dir("admission-accepted").unwrap();
    let cases = [
        (
            "dotted",
            json!({"configMapName": "a.b", "server": {"enabled": false}}),
        ),
        ("no-tls", json!({"server": {"tlsSecretName": ""}})),
        ("long", json!({"configMapName": "a".repeat(63)})),
    ];
    for (name, spec) in cases {
        let publication = PublicationBuilder::new(name).selector(json!({})).spec(spec);
        let manifest = publication.json().to_string();
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &manifest).unwrap();
        let path = file.to_string_lossy();
        let out = kubectl(&["create", "--dry-run=server", "-n", &ns.name, "-f", &path]).await;
        assert!(out.success(), "refused:\n{manifest}\n{}", out.stderr);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
