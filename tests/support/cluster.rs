//! The control plane a test binary shares: started on first use by `start.sh --watch-pid`,
//! torn down by the launcher when this process exits.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::namespace::{crd_manifests, crds_dir};
use super::processes::{read_pid, send_signal, tail};
use super::repo_root;

/// How long `start.sh` may take once the binaries are built.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// The same with a node (containerd, kubelet, kube-proxy, kube-scheduler).
const NODE_START_TIMEOUT: Duration = Duration::from_secs(300);

/// The OCI archives a node imports, set by [`use_node`]: this binary's control plane has a node.
static NODE_IMAGES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Gives this test binary's control plane a node (`KCP_NODE=1`, hack/control-plane/node.sh) that
/// imports `images`. Call before its first use; one node runs per machine.
pub fn use_node(images: Vec<PathBuf>) {
    assert!(
        NODE_IMAGES.set(images).is_ok() && CONTROL_PLANE.get().is_none(),
        "use_node must be called once, before the control plane starts"
    );
}

/// The AuthenticationConfiguration file of this binary's kube-apiserver, set by
/// [`use_authentication_config`].
static AUTHENTICATION_CONFIG: OnceLock<PathBuf> = OnceLock::new();

/// Gives this test binary's kube-apiserver `--authentication-config=path` (the JWT issuers it
/// trusts; it reloads the file when it changes). Call before its first use.
pub fn use_authentication_config(path: PathBuf) {
    assert!(
        AUTHENTICATION_CONFIG.set(path).is_ok() && CONTROL_PLANE.get().is_none(),
        "use_authentication_config must be called once, before the control plane starts"
    );
}

/// A running control plane started by `start.sh --watch-pid`.
pub struct ControlPlane {
    /// `KCP_DIR`: pki, logs, pid files (`etcd.pid`, `apiserver.pid`, `controller-manager.pid`).
    pub dir: PathBuf,
    /// The admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Where etcd, kube-apiserver, kube-controller-manager and kubectl are.
    pub bin_dir: PathBuf,
    /// The launcher (`start.sh`) itself.
    pub launcher: Mutex<Child>,
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use. Blocks while it starts; from
/// async code prefer [`shared_control_plane`]. Panics if it cannot start or has died since.
pub fn control_plane() -> &'static ControlPlane {
    let started = CONTROL_PLANE.get_or_init(|| {
        eprintln!("[support] starting the shared control plane");
        let dir = new_temp_dir("kcp")?;
        launch_control_plane(std::process::id(), &dir, true)
    });
    // A failed start is remembered, so every test fails at once with the same cause.
    let cp = started
        .as_ref()
        .unwrap_or_else(|e| panic!("the test control plane did not start: {e}"));
    cp.assert_running();
    cp
}

/// [`control_plane`] without blocking the test's runtime.
pub async fn shared_control_plane() -> &'static ControlPlane {
    match tokio::task::spawn_blocking(control_plane).await {
        Ok(cp) => cp,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl ControlPlane {
    /// Panics with the launcher's log if the control plane has stopped (a component died).
    pub fn assert_running(&self) {
        let mut launcher = self.launcher.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(status)) = launcher.try_wait() {
            panic!(
                "the test control plane stopped ({status}); launcher log:\n{}",
                tail(&self.dir.join("launcher.log"), 60)
            );
        }
    }

    /// Whether the launcher has exited (it is reaped if so).
    pub fn launcher_exited(&self) -> bool {
        let mut launcher = self.launcher.lock().unwrap_or_else(|e| e.into_inner());
        matches!(launcher.try_wait(), Ok(Some(_)))
    }

    /// The pid recorded in `<component>.pid` (`etcd`, `apiserver`, `controller-manager`).
    pub fn component_pid(&self, component: &str) -> u32 {
        read_pid(&self.dir.join(format!("{component}.pid")))
    }

    /// The pids of all three components.
    pub fn component_pids(&self) -> Vec<(String, u32)> {
        ["etcd", "apiserver", "controller-manager"]
            .iter()
            .map(|c| (c.to_string(), self.component_pid(c)))
            .collect()
    }
}

/// Builds the binaries if needed (`hack/control-plane/build.sh`, reusing its cache) and returns
/// their directory. Run once per process, outside any start deadline: a cold build takes minutes.
pub fn bin_dir() -> Result<PathBuf, String> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            let script = repo_root().join("hack/control-plane/build.sh");
            let out = Command::new(&script)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().last() {
                Some(dir) if out.status.success() => Ok(PathBuf::from(dir.trim())),
                _ => Err(format!(
                    "{} failed ({}):\n{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )),
            }
        })
        .clone()
}

/// Starts `start.sh --watch-pid <watch_pid>` with state in `dir` and waits until it reports
/// ready. With `with_crds`, the CRDs in `crds/` are installed before the controller-manager
/// starts (so its garbage collector knows their kinds from the beginning).
///
/// The launcher removes `dir` when it stops cleanly (`KCP_CLEANUP=1`).
pub fn launch_control_plane(
    watch_pid: u32,
    dir: &Path,
    with_crds: bool,
) -> Result<ControlPlane, String> {
    let bin_dir = bin_dir()?;
    let script = repo_root().join("hack/control-plane/start.sh");
    let mut cmd = Command::new(&script);
    let start_timeout = match NODE_IMAGES.get() {
        Some(images) => {
            let archives: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
            cmd.env("KCP_NODE", "1")
                .env("KCP_NODE_IMAGES", archives.join(" "));
            NODE_START_TIMEOUT
        }
        None => START_TIMEOUT,
    };
    cmd.arg("--watch-pid")
        .arg(watch_pid.to_string())
        .env("KCP_DIR", dir)
        .env("KCP_CLEANUP", "1")
        .env("KCP_START_TIMEOUT", start_timeout.as_secs().to_string())
        .env("KUBEBUILDER_ASSETS", &bin_dir)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if with_crds && !crd_manifests().is_empty() {
        cmd.env("KCP_CRDS", crds_dir());
    }
    if let Some(path) = AUTHENTICATION_CONFIG.get() {
        cmd.env("KCP_AUTHENTICATION_CONFIG", path);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;

    // Read both pipes on threads so that a deadline applies and neither pipe can fill up.
    let stderr_text = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = Arc::clone(&stderr_text);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }

    let failed = |child: &mut Child, why: String| {
        // SIGTERM lets the launcher stop what it already started.
        send_signal(child.id(), "TERM");
        let _ = child.wait();
        let log = stderr_text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Err(format!("{why}; launcher output:\n{log}"))
    };
    let deadline = Instant::now() + start_timeout + Duration::from_secs(30);
    let mut fields = HashMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some((key, value)) = line.split_once('=') {
                    fields.insert(key.to_string(), PathBuf::from(value));
                }
                if line.starts_with("KUBECONFIG=") {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return failed(
                    &mut child,
                    format!(
                        "not ready within {:?}",
                        start_timeout + Duration::from_secs(30)
                    ),
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return failed(
                    &mut child,
                    format!("start.sh exited ({status}) before it was ready"),
                );
            }
        }
    }
    let cp = ControlPlane {
        dir: fields
            .remove("KCP_DIR")
            .unwrap_or_else(|| dir.to_path_buf()),
        kubeconfig: fields.remove("KUBECONFIG").unwrap_or_default(),
        bin_dir: fields.remove("KCP_BIN_DIR").unwrap_or(bin_dir),
        launcher: Mutex::new(child),
    };
    eprintln!(
        "[support] control plane ready: KUBECONFIG={}",
        cp.kubeconfig.display()
    );
    Ok(cp)
}

/// A new, empty directory under the system temp dir (never inside the repository).
pub fn new_temp_dir(purpose: &str) -> Result<PathBuf, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "jwks-operator-{purpose}-{}-{}-{nanos:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
