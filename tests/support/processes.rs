//! Child processes (the operator binary, servers, ...), signals and `/proc`.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use super::cluster::shared_control_plane;

/// A child process whose stdout and stderr go to a log file. Killed (SIGKILL) when dropped; if
/// the test is panicking then, its log is printed into the test's output. The log file is
/// removed unless the test failed.
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd` (stdin closed, stdout and stderr captured). `name` labels the log.
    pub fn spawn(name: &str, mut cmd: Command) -> ChildProcess {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let log_path = std::env::temp_dir().join(format!(
            "jwks-operator-test-{name}-{}-{}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // One open file description for both streams, so their writes interleave, not overwrite.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildProcess {
            name: name.to_string(),
            child,
            log_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` (a name such as `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Kills the process (if still running) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let status = self.kill();
        if thread::panicking() {
            eprintln!(
                "----- {} (pid {}, {}) log: {} -----\n{}\n----- end of {} log -----",
                self.name,
                self.child.id(),
                status.map(|s| s.to_string()).unwrap_or_default(),
                self.log_path.display(),
                tail(&self.log_path, 400),
                self.name
            );
        } else {
            let _ = fs::remove_file(&self.log_path);
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`, ...) with kill(1); errors (e.g. no such process) are
/// ignored.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live process (present and not a zombie).
pub fn process_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Live processes whose command line contains `needle`, as (pid, command line).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && process_running(pid))
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

pub(crate) fn read_pid(path: &Path) -> u32 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", path.display()))
}

/// The last `lines` lines of a file (or a note that it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `jwks-operator run -n NAMESPACE` against the shared control plane, logging JSON. It runs
/// under `setpriv --pdeathsig KILL`, so it dies with the test thread that started it even if the
/// test binary is killed; dropping it kills it too.
pub async fn start_operator(namespace: &str) -> ChildProcess {
    start_operator_with(namespace, &[]).await
}

/// [`start_operator`] with more `run` flags.
pub async fn start_operator_with(namespace: &str, flags: &[&str]) -> ChildProcess {
    start_operator_wrapped(namespace, &[], flags).await
}

/// [`start_operator_with`], the operator started through `wrapper` (e.g. `faketime -f +1h`).
pub async fn start_operator_wrapped(
    namespace: &str,
    wrapper: &[&str],
    flags: &[&str],
) -> ChildProcess {
    let mut scoped = vec!["--namespace", namespace];
    scoped.extend(flags);
    spawn_operator(wrapper, &scoped).await
}

/// `jwks-operator run` for every namespace of the shared control plane (a cluster-wide install):
/// one per test binary, as it reconciles every test's objects.
pub async fn start_cluster_operator() -> ChildProcess {
    spawn_operator(&[], &[]).await
}

async fn spawn_operator(wrapper: &[&str], flags: &[&str]) -> ChildProcess {
    let cp = shared_control_plane().await;
    // The parent-death signal reaches only the direct child: a wrapper that forks (faketime
    // does) would die and leave the operator running, so the operator gets its own.
    let dies_with_parent = ["setpriv", "--pdeathsig", "KILL", "--"];
    let mut cmd = Command::new("setpriv");
    cmd.args(&dies_with_parent[1..])
        .args(wrapper)
        .args(if wrapper.is_empty() {
            &[][..]
        } else {
            &dies_with_parent[..]
        })
        .arg(env!("CARGO_BIN_EXE_jwks-operator"))
        .args(["run", "--log-format", "json"])
        .args(flags)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("RUST_LOG", "info,jwks_operator=debug")
        .env_remove("KUBERNETES_SERVICE_HOST");
    ChildProcess::spawn("operator", cmd)
}
