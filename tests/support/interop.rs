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
/// wrong-issuer tokens are refused. With `ca`, the three trust that CA's certificates alone
/// (an https issuer with a test CA). `scratch` receives the keys and tokens files.
pub fn verify_remotely(
    tools: &BTreeMap<String, String>,
    issuer: &str,
    keys: &[Value],
    ca: Option<&Path>,
    scratch: &Path,
) {
    std::fs::write(scratch.join("keys.json"), serde_json::to_vec(keys).unwrap()).unwrap();
    let interop = super::repo_root().join("tests/interop");
    let tokens = scratch.join("tokens.json");
    let mut jose = Command::new("node");
    jose.arg(interop.join("remote_sign_verify.mjs"))
        .args(["--issuer", issuer, "--keys"])
        .arg(scratch.join("keys.json"))
        .arg("--out")
        .arg(&tokens)
        .env("NODE_PATH", &tools["NODE_PATH"]);
    let mut pyjwt = Command::new(&tools["PYTHON"]);
    pyjwt
        .arg(interop.join("pyjwt_remote_verify.py"))
        .arg(&tokens);
    let mut go_oidc = Command::new(&tools["OIDC_VERIFY"]);
    go_oidc.arg(&tokens);
    // jose signs first and writes the tokens the other two read: run in this order.
    let runs =
        [("jose", jose), ("PyJWT", pyjwt), ("go-oidc", go_oidc)].map(|(library, mut cmd)| {
            // Node adds NODE_EXTRA_CA_CERTS to its roots; Python's ssl and Go read SSL_CERT_FILE.
            if let Some(ca) = ca {
                cmd.env("NODE_EXTRA_CA_CERTS", ca).env("SSL_CERT_FILE", ca);
            }
            (library, cmd)
        });
    for (library, mut cmd) in runs {
        let output = cmd.output();
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
        assert_eq!(
            valid.len(),
            keys.len(),
            "{library}: one valid token per key"
        );
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
