//! Keys made by `jwks-operator jwk generate` work in independent verifier libraries.
//!
//! For every signing alg the CLI generates two keys. A JWT signed with the first key's PKCS#8
//! PEM (by panva `jose`) must verify with its published JWK in `jose` and in PyJWT, must fail
//! against the second key's JWK (the negative control), and `jose`'s RFC 7638 thumbprint of
//! the JWK must equal its `kid`. A set holding the JWK must lint clean.
//!
//! The verifiers are pinned in `tests/interop/` and installed by `tests/interop/setup.sh` into
//! a cache outside the repository; this needs `python3`, `node` and `npm`, and reaches PyPI and
//! npm only when that cache is cold. The scripts themselves are tested without the CLI by
//! `tests/interop/selftest.sh`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const CLI: &str = env!("CARGO_BIN_EXE_jwks-operator");
const INTEROP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

const SIGNING_ALGS: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

// A cold install downloads cryptography and jose; everything else is local and quick.
const SETUP_DEADLINE: Duration = Duration::from_secs(900);
const STEP_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn every_signing_algorithm_verifies_in_pyjwt_and_jose() {
    assert_every_alg(
        "a token signed with the generated key verifies with its JWK",
        |run| {
            let jose = run.script("jose")?;
            let pyjwt = run.script("pyjwt")?;
            let mut problems = Vec::new();
            if jose.field("/verify/ok") != Some(&json!(true)) {
                problems.push(format!(
                    "jose did not verify: {}",
                    jose.field_text("/verify/error")
                ));
            }
            if pyjwt.field("/verify/ok") != Some(&json!(true)) {
                problems.push(format!(
                    "PyJWT did not verify: {}",
                    pyjwt.field_text("/verify/error")
                ));
            }
            problems_to_result(&problems, &[jose, pyjwt])
        },
    );
}

#[test]
fn token_does_not_verify_with_another_key_of_the_same_algorithm() {
    assert_every_alg(
        "the negative control (another key's JWK) fails on the signature",
        |run| {
            let jose = run.script("jose")?;
            let pyjwt = run.script("pyjwt")?;
            let mut problems = Vec::new();
            let cases = [
                (jose, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
                (pyjwt, "InvalidSignatureError"),
            ];
            for (script, signature_error) in cases {
                if script.field("/negative_control/ok") != Some(&json!(false)) {
                    problems.push(format!(
                        "{} verified the token with another key",
                        script.name
                    ));
                } else if script.field("/negative_control/code") != Some(&json!(signature_error)) {
                    problems.push(format!(
                        "{} rejected the token for another reason than the signature: {}",
                        script.name,
                        script.field_text("/negative_control/error")
                    ));
                }
            }
            problems_to_result(&problems, &[jose, pyjwt])
        },
    );
}

#[test]
fn jose_thumbprint_of_every_generated_jwk_equals_its_kid() {
    assert_every_alg("jose calculateJwkThumbprint(jwk, 'sha256') == kid", |run| {
        let jose = run.script("jose")?;
        let kid = run.jwk.get("kid");
        let thumbprint = jose.field("/thumbprint");
        if thumbprint.is_some() && thumbprint == kid {
            Ok(())
        } else {
            Err(format!(
                "jose thumbprint {} but kid {}\n{}",
                jose.field_text("/thumbprint"),
                kid.map_or_else(|| "is missing".to_owned(), Value::to_string),
                jose.describe()
            ))
        }
    });
}

#[test]
fn cli_thumbprint_of_pem_and_jwk_equals_jose_thumbprint() {
    assert_every_alg(
        "`jwk thumbprint` of key.pem and of jwk.json prints jose's thumbprint",
        |run| {
            let jose = run.script("jose")?;
            let expected = jose
                .field("/thumbprint")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("jose computed no thumbprint\n{}", jose.describe()))?;
            let mut problems = Vec::new();
            for (file, output) in &run.cli_thumbprints {
                if output.code != Some(0) || output.stdout.trim() != expected {
                    problems.push(format!(
                        "`jwk thumbprint {file}` does not print {expected}\n{}",
                        output.describe()
                    ));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("\n"))
            }
        },
    );
}

#[test]
fn set_holding_one_generated_jwk_lints_clean() {
    assert_every_alg("`jwks lint` exits 0 on {\"keys\":[jwk]}", |run| {
        let lint = run.lint.as_ref().ok_or("lint did not run")?;
        if lint.code == Some(0) {
            Ok(())
        } else {
            Err(format!(
                "jwks lint exited {:?}\n{}",
                lint.code,
                lint.describe()
            ))
        }
    });
}

#[test]
fn verifier_scripts_report_nothing_unexpected() {
    // Catches what the tests above do not name: alg/use of the JWK, private members in the
    // public JWK, the token's kid header, signing with the PEM.
    assert_every_alg("both verifier scripts exit 0", |run| {
        let jose = run.script("jose")?;
        let pyjwt = run.script("pyjwt")?;
        let failed: Vec<&ScriptRun> = [jose, pyjwt]
            .into_iter()
            .filter(|s| s.output.code != Some(0))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed
                .iter()
                .map(|s| s.describe())
                .collect::<Vec<_>>()
                .join("\n"))
        }
    });
}

/// Runs `check` on every alg's run and fails once, listing every alg that failed.
fn assert_every_alg(expectation: &str, check: impl Fn(&AlgRun) -> Result<(), String>) {
    let runs = alg_runs();
    let failures: Vec<String> = runs
        .runs
        .iter()
        .filter_map(|run| {
            let result = match &run.generated {
                Err(error) => Err(format!("jwk generate failed: {error}")),
                Ok(()) => check(run),
            };
            result
                .err()
                .map(|error| format!("--- {}: {}", run.alg, error))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{expectation}: failed for {} of {} algs (work dir kept: {})\n{}",
        failures.len(),
        runs.runs.len(),
        runs.work_dir.display(),
        failures.join("\n")
    );
}

fn problems_to_result(problems: &[String], scripts: &[&ScriptRun]) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let details: Vec<String> = scripts.iter().map(|s| s.describe()).collect();
    Err(format!("{}\n{}", problems.join("; "), details.join("\n")))
}

struct AlgRuns {
    work_dir: PathBuf,
    runs: Vec<AlgRun>,
}

struct AlgRun {
    alg: &'static str,
    generated: Result<(), String>,
    jwk: Value,
    lint: Option<Output>,
    /// `jwk thumbprint FILE` for key.pem and jwk.json, by file name.
    cli_thumbprints: Vec<(&'static str, Output)>,
    scripts: Vec<ScriptRun>,
}

impl AlgRun {
    fn script(&self, name: &str) -> Result<&ScriptRun, String> {
        self.scripts
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("the {name} script did not run"))
    }
}

struct ScriptRun {
    name: &'static str,
    output: Output,
    /// The script's JSON report, when stdout held one.
    report: Option<Value>,
}

impl ScriptRun {
    fn field(&self, pointer: &str) -> Option<&Value> {
        self.report.as_ref()?.pointer(pointer)
    }

    fn field_text(&self, pointer: &str) -> String {
        match self.field(pointer) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => format!("(no {pointer} in the report)"),
        }
    }

    fn describe(&self) -> String {
        format!("[{}] {}", self.name, self.output.describe())
    }
}

/// The per-alg runs, made once per test binary and shared by the tests.
fn alg_runs() -> &'static AlgRuns {
    static RUNS: OnceLock<Result<AlgRuns, String>> = OnceLock::new();
    match RUNS.get_or_init(run_every_alg) {
        Ok(runs) => runs,
        Err(error) => panic!("{error}"),
    }
}

fn run_every_alg() -> Result<AlgRuns, String> {
    let verifiers = install_verifiers()?;
    let work_dir = unique_work_dir()?;
    let runs: Vec<AlgRun> = SIGNING_ALGS
        .iter()
        .map(|alg| run_alg(alg, &work_dir.join(alg), &verifiers))
        .collect();
    let clean = runs.iter().all(|run| {
        run.generated.is_ok()
            && run.lint.as_ref().is_some_and(|o| o.code == Some(0))
            && run.cli_thumbprints.iter().all(|(_, o)| o.code == Some(0))
            && run.scripts.len() == 2
            && run.scripts.iter().all(|s| s.output.code == Some(0))
    });
    if clean {
        // Only test keys live here; kept on failure for debugging.
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(AlgRuns { work_dir, runs })
}

fn run_alg(alg: &'static str, dir: &Path, verifiers: &Verifiers) -> AlgRun {
    let mut run = AlgRun {
        alg,
        generated: Ok(()),
        jwk: Value::Null,
        lint: None,
        cli_thumbprints: Vec::new(),
        scripts: Vec::new(),
    };
    let key_dir = dir.join("key");
    let other_dir = dir.join("other");
    let generated = generate(alg, &key_dir).and_then(|jwk| generate(alg, &other_dir).map(|_| jwk));
    match generated {
        Ok(jwk) => run.jwk = jwk,
        Err(error) => {
            run.generated = Err(error);
            return run;
        }
    }

    let set_path = dir.join("jwks.json");
    let set = json!({ "keys": [run.jwk.clone()] });
    run.lint = Some(match std::fs::write(&set_path, set.to_string()) {
        Ok(()) => run_command(
            Command::new(CLI).arg("jwks").arg("lint").arg(&set_path),
            STEP_DEADLINE,
        ),
        Err(error) => {
            Output::failed_to_start(format!("cannot write {}: {error}", set_path.display()))
        }
    });

    for file in ["key.pem", "jwk.json"] {
        let output = run_command(
            Command::new(CLI)
                .args(["jwk", "thumbprint"])
                .arg(key_dir.join(file)),
            STEP_DEADLINE,
        );
        run.cli_thumbprints.push((file, output));
    }

    let key_args = |command: &mut Command| {
        command
            .arg("--alg")
            .arg(alg)
            .arg("--key-dir")
            .arg(&key_dir)
            .arg("--other-key-dir")
            .arg(&other_dir);
    };
    // jose runs first: it signs the token that PyJWT then reads from key/token.jwt.
    let mut node = Command::new("node");
    node.arg(Path::new(INTEROP_DIR).join("jose_verify.mjs"))
        .env("NODE_PATH", &verifiers.node_path);
    key_args(&mut node);
    run.scripts.push(ScriptRun::run("jose", &mut node));
    let mut python = Command::new(&verifiers.python);
    python.arg(Path::new(INTEROP_DIR).join("pyjwt_verify.py"));
    key_args(&mut python);
    run.scripts.push(ScriptRun::run("pyjwt", &mut python));
    run
}

impl ScriptRun {
    fn run(name: &'static str, command: &mut Command) -> ScriptRun {
        let output = run_command(command, STEP_DEADLINE);
        let report = serde_json::from_str(&output.stdout).ok();
        ScriptRun {
            name,
            output,
            report,
        }
    }
}

/// `jwk generate --alg ALG --out-dir DIR`; saves the printed public JWK as DIR/jwk.json.
fn generate(alg: &str, dir: &Path) -> Result<Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let output = run_command(
        Command::new(CLI)
            .args(["jwk", "generate", "--alg", alg, "--out-dir"])
            .arg(dir),
        STEP_DEADLINE,
    );
    if output.code != Some(0) {
        return Err(output.describe());
    }
    let jwk: Value = serde_json::from_str(&output.stdout)
        .map_err(|e| format!("stdout is not one JSON value ({e})\n{}", output.describe()))?;
    if !jwk.is_object() {
        return Err(format!(
            "stdout is not a JSON object\n{}",
            output.describe()
        ));
    }
    if !dir.join("key.pem").is_file() {
        return Err(format!(
            "no key.pem in {}\n{}",
            dir.display(),
            output.describe()
        ));
    }
    std::fs::write(dir.join("jwk.json"), jwk.to_string())
        .map_err(|e| format!("cannot write jwk.json: {e}"))?;
    Ok(jwk)
}

struct Verifiers {
    python: PathBuf,
    node_path: PathBuf,
}

/// Runs `tests/interop/setup.sh` and reads the `KEY=VALUE` lines it prints.
fn install_verifiers() -> Result<Verifiers, String> {
    let output = run_command(
        Command::new("bash").arg(Path::new(INTEROP_DIR).join("setup.sh")),
        SETUP_DEADLINE,
    );
    if output.code != Some(0) {
        return Err(format!(
            "tests/interop/setup.sh failed\n{}",
            output.describe()
        ));
    }
    let value = |key: &str| {
        output
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(PathBuf::from)
            .ok_or_else(|| format!("setup.sh printed no {key}= line\n{}", output.describe()))
    };
    Ok(Verifiers {
        python: value("PYTHON")?,
        node_path: value("NODE_PATH")?,
    })
}

fn unique_work_dir() -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "jwks-operator-interop-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// What a finished (or killed) command left; `code` is None when it did not exit normally.
struct Output {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn failed_to_start(reason: String) -> Output {
        Output {
            command: String::new(),
            code: None,
            stdout: String::new(),
            stderr: reason,
        }
    }

    fn describe(&self) -> String {
        format!(
            "$ {}\nexit: {:?}\nstderr:\n{}\nstdout:\n{}",
            self.command,
            self.code,
            self.stderr.trim_end(),
            self.stdout.trim_end()
        )
    }
}

/// Runs `command` to completion, killing its process group at `deadline` (so no grandchild
/// keeps the pipes open); stdout and stderr are captured.
fn run_command(command: &mut Command, deadline: Duration) -> Output {
    let shown = format!("{command:?}");
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Output {
                command: shown,
                ..Output::failed_to_start(format!("cannot start: {error}"))
            };
        }
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                timed_out = true;
                let group = format!("-{}", child.id());
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = child.kill();
                break child.wait().ok();
            }
            Err(_) => break None,
        }
    };
    let mut stderr = stderr.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!("\n(killed after {}s)", deadline.as_secs()));
    }
    Output {
        command: shown,
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr,
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}
