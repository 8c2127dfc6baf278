//! The verifier libraries of tests/interop (panva `jose`, PyJWT, go-oidc), run against a live
//! issuer: what a relying party that nobody here wrote accepts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Where tests/interop/setup.sh installed the verifiers: `PYTHON`, `NODE_PATH`, `OIDC_VERIFY`.
pub fn interop_tools() -> BTreeMap<String, String> {
    let output = Command::new("bash")
        .arg(super::repo_root().join("tests/interop/setup.sh"))
        .output()
        .expect("run tests/interop/setup.sh");
    assert!(
        output.status.success(),
        "setup.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Signs a token with each of `keys` (`{"alg", "kid", "key_pem"}`) and has panva `jose`
/// (`createRemoteJWKSet`), PyJWT (`PyJWKClient`) and go-oidc (discovery, then the JWKS) verify
/// them against `issuer`, each fetching discovery and keys over HTTP. Asserts every valid token
/// verifies in all three, and that HS256-with-the-public-key, `none`, unknown-kid and
/// wrong-issuer tokens are refused. `scratch` receives the keys and tokens files.
pub fn verify_remotely(tools: &BTreeMap<String, String>, issuer: &str, keys: &[Value], scratch: &Path) {
    std::fs::write(scratch.join("keys.json"), serde_json::to_vec(keys).unwrap()).unwrap();
    let interop = super::repo_root().join("tests/interop");
    let tokens = scratch.join("tokens.json");
    let runs = [
        (
            "jose",
            Command::new("node")
                .arg(interop.join("remote_sign_verify.mjs"))
                .args(["--issuer", issuer, "--keys"])
                .arg(scratch.join("keys.json"))
                .arg("--out")
                .arg(&tokens)
                .env("NODE_PATH", &tools["NODE_PATH"])
                .output(),
        ),
        (
            "PyJWT",
            Command::new(&tools["PYTHON"])
                .arg(interop.join("pyjwt_remote_verify.py"))
                .arg(&tokens)
                .output(),
        ),
        (
            "go-oidc",
            Command::new(&tools["OIDC_VERIFY"]).arg(&tokens).output(),
        ),
    ];
    for (library, output) in runs {
        let output = output.unwrap_or_else(|e| panic!("{library}: {e}"));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{library}: {e}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert!(
            output.status.success(),
            "{library}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(report["unexpected"], json!([]), "{library}");
        let results = report["results"].as_array().unwrap();
        let valid: Vec<&Value> = results.iter().filter(|r| r["case"] == "valid").collect();
        assert_eq!(valid.len(), keys.len(), "{library}: one valid token per key");
        assert!(
            valid.iter().all(|r| r["outcome"] == "valid"),
            "{library}: {valid:?}"
        );
        for case in [
            "hs256-public-key-as-secret",
            "alg-none",
            "unknown-kid",
            "wrong-issuer",
        ] {
            let result = results
                .iter()
                .find(|r| r["case"] == case)
                .unwrap_or_else(|| panic!("{library}: no {case} case"));
            assert_eq!(
                result["outcome"], "invalid",
                "{library}: {case} must be refused"
            );
        }
    }
}
