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

/// tests/interop/rotation_verifier.mjs, running: panva `jose` verifying against a live JWKS,
/// through a JWKS cache of 1 s, one token at a time, each signed with the key a Secret holds at
/// that instant (what a signer that reads its mounted Secret does).
pub struct RotationVerifier {
    _node: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RotationVerifier {
    pub fn start(jwks_uri: &str, node_path: &str) -> RotationVerifier {
        use tokio::io::AsyncBufReadExt;

        let mut node = tokio::process::Command::new("node")
            .arg(super::repo_root().join("tests/interop/rotation_verifier.mjs"))
            .args(["--jwks-uri", jwks_uri, "--cache-max-age-ms", "1000"])
            .env("NODE_PATH", node_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let input = node.stdin.take().expect("stdin");
        let output = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
        RotationVerifier {
            _node: node,
            input,
            output,
        }
    }

    /// Signs a token with the key Secret `name` holds now and has it verified: the kid it was
    /// signed with, or the verifier's whole verdict when it refused the token.
    pub async fn verify_with(
        &mut self,
        secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
        name: &str,
    ) -> Result<String, Value> {
        use tokio::io::AsyncWriteExt;

        let data = secrets.get(name).await.unwrap().data.unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        let line = json!({"alg": text("alg"), "kid": text("kid"), "key_pem": text("key.pem")});
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let answer = tokio::time::timeout(super::TIMEOUT, self.output.next_line())
            .await
            .expect("a verdict in time")
            .unwrap()
            .expect("a verdict");
        let verdict: Value = serde_json::from_str(&answer).unwrap();
        match (&verdict["ok"], verdict["kid"].as_str()) {
            (Value::Bool(true), Some(kid)) => Ok(kid.to_owned()),
            _ => Err(verdict),
        }
    }
}
