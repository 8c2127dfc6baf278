//! The command line refuses bad input with one clear line and the documented exit code.

mod fixtures;

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jwks-operator"));
    command.args(args).env("RUST_BACKTRACE", "1");
    match stdin {
        None => command.output().expect("run jwks-operator"),
        Some(input) => {
            use std::io::Write as _;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn jwks-operator");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write stdin");
            child.wait_with_output().expect("wait")
        }
    }
}

fn fixtures() -> PathBuf {
    let dir = fixtures::scratch_dir("cli");
    fixtures::write_refused_keys(&dir);
    fixtures::openssl(
        &dir,
        &["pkey", "-in", "cert-key.pem", "-pubout", "-out", "p256.pub"],
    );
    let write = |name: &str, text: &[u8]| std::fs::write(dir.join(name), text).unwrap();
    write("empty.pem", b"");
    write("garbage.pem", b"definitely not a key\n");
    write(
        "two-keys.pem",
        &[
            std::fs::read(dir.join("cert-key.pem")).unwrap(),
            std::fs::read(dir.join("rsa1024.pem")).unwrap(),
        ]
        .concat(),
    );
    write("private.jwk", br#"{"kty":"oct","k":"c2VjcmV0"}"#);
    write("not-json.jwk", b"{ not json");
    write(
        "bare-jwk.json",
        br#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#,
    );
    write("dup-members.json", br#"{"keys":[],"keys":[]}"#);
    write("array.json", b"[]");
    dir
}

/// (arguments, exit code, a phrase the one-line message must contain). `{}` is the fixture dir.
const BAD_INPUTS: &[(&[&str], i32, &str)] = &[
    (
        &["serve", "--dir", "{}", "--shutdown-delay-seconds", "301"],
        2,
        "not in 0..=300",
    ),
    (
        &["serve", "--dir", "{}", "--shutdown-delay-seconds", "-1"],
        2,
        "unexpected argument '-1'",
    ),
    (
        &["serve", "--dir", "{}", "--workers", "0"],
        2,
        "0 is not in 1..=64",
    ),
    (
        &["serve", "--dir", "{}", "--workers", "65"],
        2,
        "65 is not in 1..=64",
    ),
    (
        &["serve", "--dir", "{}", "--workers", "abc"],
        2,
        "invalid digit",
    ),
    (
        &["jwk", "generate", "--alg", "HS256"],
        2,
        "unknown algorithm",
    ),
    (
        &["jwk", "generate", "--alg", "es256"],
        2,
        "unknown algorithm",
    ),
    (&["jwk", "generate"], 2, "--alg"),
    (
        &["jwk", "generate", "--alg", "ES256", "--key-size", "2048"],
        2,
        "key size applies to RSA",
    ),
    (
        &["jwk", "generate", "--alg", "RS256", "--key-size", "1024"],
        2,
        "unsupported RSA key size 1024",
    ),
    (
        &["jwk", "generate", "--alg", "RS256", "--key-size", "big"],
        2,
        "invalid value",
    ),
    (
        &["jwk", "generate", "--alg", "ES256", "--curve", "P-384"],
        2,
        "curve applies to ECDH-ES",
    ),
    (
        &[
            "jwk",
            "generate",
            "--alg",
            "ECDH-ES",
            "--curve",
            "secp256k1",
        ],
        2,
        "unsupported curve secp256k1",
    ),
    (
        &["jwk", "generate", "--alg", "ES256", "--cert-days", "10"],
        2,
        "--cert-cn",
    ),
    (
        &[
            "jwk",
            "generate",
            "--alg",
            "ES256",
            "--out-dir",
            "/proc/forbidden",
        ],
        1,
        "cannot create",
    ),
    (&["jwk", "from-pem", "{}/missing.pem"], 2, "cannot read"),
    (
        &["jwk", "from-pem", "{}/empty.pem"],
        1,
        "the input is empty",
    ),
    (&["jwk", "from-pem", "{}/garbage.pem"], 1, "not PEM"),
    (&["jwk", "from-pem", "{}/encrypted.pem"], 1, "encrypted"),
    (
        &["jwk", "from-pem", "{}/cert.pem"],
        1,
        "certificate where a key was expected",
    ),
    (
        &["jwk", "from-pem", "{}/rsa1024.pem"],
        1,
        "at least 2048 bits",
    ),
    (
        &["jwk", "from-pem", "{}/secp256k1.pem"],
        1,
        "unsupported curve secp256k1",
    ),
    (&["jwk", "from-pem", "{}/two-keys.pem"], 1, "found 2 keys"),
    (
        &["jwk", "from-pem", "{}/cert-key.pem", "--alg", "RS256"],
        1,
        "cannot be used with RS256",
    ),
    (
        &["jwk", "from-pem", "{}/cert-key.pem", "--alg", "ES384"],
        1,
        "cannot be used with ES384",
    ),
    (
        &["jwk", "from-pem", "{}/p256.pub", "--private"],
        1,
        "needs a private key",
    ),
    (&["jwk", "thumbprint", "{}/private.jwk"], 1, "kty \"oct\""),
    (
        &["jwk", "thumbprint", "{}/not-json.jwk"],
        1,
        "not valid JSON",
    ),
    (&["jwk", "thumbprint", "{}/garbage.pem"], 1, "not PEM"),
    (&["jwks", "lint"], 2, "<SOURCE>"),
    (&["jwks", "lint", "{}/missing.json"], 2, "cannot read"),
    (
        &["jwks", "lint", "http://127.0.0.1:1/jwks.json"],
        2,
        "127.0.0.1:1",
    ),
    (&["jwks", "lint", "{}/bare-jwk.json"], 1, "a single JWK"),
    (
        &["jwks", "lint", "{}/dup-members.json"],
        1,
        "duplicate member name",
    ),
    (&["jwks", "lint", "{}/array.json"], 1, "not a JWK Set"),
    (&["nonsense"], 2, "unrecognized subcommand"),
];

#[test]
fn bad_input_gets_one_clear_line_and_the_right_exit_code() {
    let dir = fixtures();
    let dir_text = dir.to_string_lossy().into_owned();
    let mut failures = Vec::new();
    for (args, code, phrase) in BAD_INPUTS {
        let args: Vec<String> = args.iter().map(|a| a.replace("{}", &dir_text)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let message = if stderr.trim().is_empty() {
            stdout.to_string()
        } else {
            stderr.to_string()
        };
        let problems = [
            (output.status.code() != Some(*code))
                .then(|| format!("exit {:?}, expected {code}", output.status.code())),
            (!message.contains(phrase)).then(|| format!("message lacks {phrase:?}")),
            (message.contains("panicked") || message.contains("backtrace"))
                .then(|| "panic".to_owned()),
        ];
        for problem in problems.into_iter().flatten() {
            failures.push(format!(
                "{args:?}: {problem}\n  stderr: {stderr}  stdout: {stdout}"
            ));
        }
        // Usage errors may show clap's usage block; every other error is exactly one line.
        if *code == 1 && !stderr.trim().is_empty() && stderr.trim().lines().count() != 1 {
            failures.push(format!("{args:?}: error is not one line: {stderr}"));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(BAD_INPUTS.len() >= 20);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generate_writes_a_private_key_readable_only_by_its_owner_and_never_overwrites_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("jwks-operator-cli-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_string_lossy().into_owned();
    let output = run(
        &["jwk", "generate", "--alg", "ES256", "--out-dir", &dir_text],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(dir.join("key.pem")).unwrap();

    let again = run(
        &["jwk", "generate", "--alg", "ES256", "--out-dir", &dir_text],
        None,
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(dir.join("key.pem")).unwrap(),
        first,
        "the key was replaced"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn from_pem_and_thumbprint_agree_with_generate() {
    let dir = std::env::temp_dir().join(format!("jwks-operator-cli-agree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for alg in [
        "RS256",
        "PS512",
        "ES384",
        "ES512",
        "EdDSA",
        "RSA-OAEP-256",
        "ECDH-ES+A256KW",
    ] {
        let out = dir.join(alg);
        let out_text = out.to_string_lossy().into_owned();
        let generated = run(
            &["jwk", "generate", "--alg", alg, "--out-dir", &out_text],
            None,
        );
        assert!(generated.status.success(), "{alg}");
        let jwk: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
        let key_pem = out.join("key.pem");
        let converted = run(
            &["jwk", "from-pem", key_pem.to_str().unwrap(), "--alg", alg],
            None,
        );
        let converted: serde_json::Value = serde_json::from_slice(&converted.stdout).unwrap();
        assert_eq!(converted, jwk, "{alg}: from-pem differs from generate");

        let private = run(
            &["jwk", "from-pem", "-", "--alg", alg, "--private"],
            Some(&std::fs::read(&key_pem).unwrap()),
        );
        let private: serde_json::Value = serde_json::from_slice(&private.stdout).unwrap();
        assert!(private.get("d").is_some(), "{alg}: no private member");

        let thumbprint = run(&["jwk", "thumbprint", key_pem.to_str().unwrap()], None);
        assert_eq!(
            String::from_utf8_lossy(&thumbprint.stdout).trim(),
            jwk["kid"].as_str().unwrap(),
            "{alg}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
