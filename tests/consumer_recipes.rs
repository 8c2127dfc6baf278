//! The README's recipes for verifiers that nobody here wrote are manifests their own CRDs
//! accept: Envoy Gateway's SecurityPolicy and Istio's RequestAuthentication, their CRDs taken
//! from the Go module proxy (`hack/consumers/fetch-crds.sh`), each snippet applied with a
//! server-side dry run on the test apiserver. kube-apiserver's recipe is proved by
//! `tests/apiserver_verifier.rs`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{kubectl, readme_yaml_blocks, repo_root};

/// The directory holding the verifiers' CRDs (fetched once, cached outside the repo).
fn consumer_crds() -> PathBuf {
    let script = repo_root().join("hack/consumers/fetch-crds.sh");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test]
async fn the_envoy_gateway_and_istio_recipes_are_accepted_by_their_crds() {
    let ns = support::test_namespace().await;
    let crds = consumer_crds();
    for file in ["envoy-gateway-securitypolicies.yaml", "istio.yaml"] {
        let path = crds.join(file).display().to_string();
        let out = kubectl(&["apply", "--server-side", "-f", &path]).await;
        assert!(out.success(), "installing {file}: {out}");
    }
    for crd in [
        "securitypolicies.gateway.envoyproxy.io",
        "requestauthentications.security.istio.io",
    ] {
        let out = kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ])
        .await;
        assert!(out.success(), "{crd}: {out}");
    }

    let recipes: Vec<String> = readme_yaml_blocks()
        .into_iter()
        .filter(|(_, checked)| *checked == support::Checked::ByConsumerCrd)
        .map(|(block, _)| block)
        .collect();
    assert_eq!(
        recipes.len(),
        2,
        "one Envoy Gateway and one Istio recipe: {recipes:#?}"
    );
    let dir = support::new_temp_dir("consumer-recipes").unwrap();
    for (i, recipe) in recipes.iter().enumerate() {
        let path = dir.join(format!("recipe-{i}.yaml"));
        std::fs::write(&path, recipe).unwrap();
        let path = path.display().to_string();
        let out = kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            &path,
        ])
        .await;
        assert!(
            out.success(),
            "the README recipe is refused by its CRD:\n{recipe}\n{out}"
        );
    }
    // The Envoy Gateway recipe reads the publication's ConfigMap by the key every one carries.
    assert!(recipes[0].contains("name: main-jwks") || recipes[1].contains("name: main-jwks"));
    assert_eq!(jwks_operator::publication::ENVOY_JWKS_KEY, "jwks");
}
