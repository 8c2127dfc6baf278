//! Logs read by machines: no colour codes when stderr is not a terminal (a file, a pipe, a
//! container runtime), and JSON logs one object per line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Runs `serve` on an empty directory (it logs that it listens, then that there is nothing to
/// serve yet) and returns its stderr lines up to that warning.
fn serve_log(format: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("logs-{format}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jwks-operator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            format,
            "--dir",
        ])
        .arg(&dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_until(&mut child, "nothing to serve yet");
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

fn read_until(child: &mut Child, marker: &str) -> Vec<String> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let done = line.contains(marker);
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("the log ended before {marker:?}: {lines:#?}");
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let lines = serve_log("text");
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an escape sequence in {line:?}");
    }
    assert!(lines.iter().any(|l| l.contains(" WARN ")), "{lines:#?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = serve_log("json");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON value ({e}): {line:?}"));
        assert!(value.is_object(), "{line:?}");
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line:?}"
        );
        assert!(!line.contains('\u{1b}'), "an escape sequence in {line:?}");
    }
    assert!(lines.iter().any(|l| l.contains("\"WARN\"")), "{lines:#?}");
}
