//! Shared support for integration tests that need a real control plane.
//!
//! Each test binary (`mod support;`) gets one control plane (etcd, kube-apiserver,
//! kube-controller-manager; see `hack/control-plane/start.sh` and docs/control-plane.md), started
//! on first use and shared by all of its tests. The launcher watches this process and tears the
//! control plane down when the process exits, however it exits. Each test works in a namespace
//! of its own ([`test_namespace`]) with a client of its own: a `kube::Client` is bound to the
//! tokio runtime it was made on, and every `#[tokio::test]` has its own runtime.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod interop;

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Config, Resource};

/// A generous default for waits on the control plane: a 2-core machine under a parallel test
/// run is slow, and a wait that passes returns as soon as its condition holds.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Field manager for everything the tests apply.
pub const FIELD_MANAGER: &str = "jwks-operator-tests";
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

/// Gives this test binary's kube-apiserver `--authentication-config=path` (JWT issuers it
/// trusts; it reloads the file when it changes). Call before its first use.
pub fn use_authentication_config(path: PathBuf) {
    assert!(
        AUTHENTICATION_CONFIG.set(path).is_ok() && CONTROL_PLANE.get().is_none(),
        "use_authentication_config must be called once, before the control plane starts"
    );
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The shared control plane

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

// ---------------------------------------------------------------------------------------------
// Clients, namespaces, CRDs

/// A namespace of one's own on the shared control plane, and a client for this test's runtime.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

/// Creates a fresh namespace for the calling test (named after it) on the shared control plane,
/// after making sure the CRDs from `crds/` are installed. The namespace is not deleted: the
/// whole control plane goes away with the test binary.
pub async fn test_namespace() -> TestNamespace {
    let client = client().await;
    ensure_crds(&client).await;
    let base: String = thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", base.trim_matches('-'))),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test namespace: {e}"));
    TestNamespace {
        name: created.metadata.name.unwrap_or_default(),
        client,
    }
}

/// A client for the shared control plane, bound to the calling test's runtime.
pub async fn client() -> Client {
    let cp = shared_control_plane().await;
    client_for(&cp.kubeconfig).await
}

/// A client for the control plane behind `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

/// Where the CRD manifests are: `crds/`, or `JWKS_OPERATOR_TEST_CRDS` if set (to run the suite
/// against other manifests).
pub fn crds_dir() -> PathBuf {
    std::env::var_os("JWKS_OPERATOR_TEST_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("crds"))
}

/// Every `*.yaml` (and `*.yml`) in [`crds_dir`], sorted.
pub fn crd_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(crds_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Installs the CRDs from [`crds_dir`] once per test binary (see [`install_crds`]) and returns their
/// names; empty if `crds/` holds none.
pub async fn ensure_crds(client: &Client) -> &'static [String] {
    static CRDS: tokio::sync::OnceCell<Vec<String>> = tokio::sync::OnceCell::const_new();
    CRDS.get_or_init(|| install_crds(client)).await
}

/// Applies every CustomResourceDefinition in [`crd_manifests`] with server-side apply and waits
/// until each is Established. Returns their names. Panics on any failure.
pub async fn install_crds(client: &Client) -> Vec<String> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    for file in crd_manifests() {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            assert_eq!(
                doc["kind"],
                "CustomResourceDefinition",
                "{} holds something other than a CustomResourceDefinition",
                file.display()
            );
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("a CRD in {} has no metadata.name", file.display()))
                .to_string();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name} from {} failed: {e}", file.display()));
            names.push(name);
        }
    }
    for name in &names {
        wait_until(
            &api,
            name,
            TIMEOUT,
            "to be Established",
            conditions::is_crd_established(),
        )
        .await;
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// What a [`wait_for`] check returns while its condition does not hold yet; `?` converts most
/// errors and `&str` into it.
pub type Pending = Box<dyn Error + Send + Sync>;

/// Polls `check` until it returns `Ok`, and returns that value. Panics after `timeout`, with
/// `what` and the last reason `check` gave. Polls quickly at first, then every 500 ms.
///
/// ```ignore
/// let secret = wait_for(TIMEOUT, "the key Secret", || async {
///     secrets.get_opt("k").await?.ok_or("not created yet".into())
/// }).await;
/// ```
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Pending>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(25);
    loop {
        let last = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(reason)) => reason.to_string(),
            Err(_) => "the last check was still running".to_string(),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Watches one object until `condition` holds (`None` passed to the condition means "absent"),
/// and returns the object as then seen. Panics after `timeout`, naming the object and `what`.
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {kind} {name} failed: {e}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {kind} {name} {what}"),
    }
}

/// Waits until the object `name` with this `uid` is gone (deleted, or replaced by a new one).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str, timeout: Duration)
where
    K: Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    wait_until(
        api,
        name,
        timeout,
        "to be deleted",
        conditions::is_deleted(uid),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// kubectl

/// What a finished command printed, and how it exited.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl Display for CommandOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the control plane's own `kubectl` against the shared control plane.
pub async fn kubectl(args: &[&str]) -> CommandOutput {
    let cp = shared_control_plane().await;
    let out = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new(cp.bin_dir.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &cp.kubeconfig)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "kubectl {} did not finish within {TIMEOUT:?}",
            args.join(" ")
        )
    })
    .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    CommandOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// helm and kubeconform

pub struct ChartTools {
    pub helm: PathBuf,
    pub kubeconform: PathBuf,
}

/// helm and kubeconform from `hack/chart/build-tools.sh` (run once per test binary).
pub fn chart_tools() -> &'static ChartTools {
    static TOOLS: OnceLock<ChartTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = repo_root().join("hack/chart/build-tools.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("build-tools.sh printed no {key}: {stdout}"))
        };
        ChartTools {
            helm: path("HELM="),
            kubeconform: path("KUBECONFORM="),
        }
    })
}

/// helm, with its cache, config and data homes under `home` rather than the user's.
pub fn helm(home: &Path) -> Command {
    let mut cmd = Command::new(&chart_tools().helm);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

// ---------------------------------------------------------------------------------------------
// Child processes (the operator binary, servers, ...)

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

// ---------------------------------------------------------------------------------------------
// Processes

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

fn read_pid(path: &Path) -> u32 {
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

// ---------------------------------------------------------------------------------------------
// The operator

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
    let cp = shared_control_plane().await;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"])
        .args(wrapper)
        .arg(env!("CARGO_BIN_EXE_jwks-operator"))
        .args(["run", "--namespace", namespace, "--log-format", "json"])
        .args(flags)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("RUST_LOG", "info,jwks_operator=debug")
        .env_remove("KUBERNETES_SERVICE_HOST");
    ChildProcess::spawn("operator", cmd)
}

// ---------------------------------------------------------------------------------------------
// A kubelet's view of a ConfigMap, and plain HTTP

/// Writes `data` into `dir` the way the kubelet updates a mounted ConfigMap: the files go into a
/// fresh `..<timestamp>` directory, the `..data` symlink is swapped to it atomically (rename),
/// each key is a symlink through `..data`, and the previous directory is removed.
pub fn project_config_map(dir: &Path, data: &std::collections::BTreeMap<String, String>) {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(dir).unwrap();
    let stamp = format!(
        "..{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    fs::create_dir(&fresh).unwrap();
    for (key, value) in data {
        fs::write(fresh.join(key), value).unwrap();
    }
    let previous = fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&stamp, &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
    for key in data.keys() {
        let link = dir.join(key);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link).unwrap();
        }
    }
    if let Some(previous) = previous.filter(|p| p != Path::new(&stamp)) {
        let _ = fs::remove_dir_all(dir.join(previous));
    }
}

/// Follows one ConfigMap (watch) and projects every revision into `dir`, like a kubelet with a
/// zero sync period. Abort the task to stop.
pub fn kubelet(
    client: Client,
    namespace: &str,
    name: &str,
    dir: PathBuf,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::{self, Event};
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(Event::Apply(cm) | Event::InitApply(cm)) = event {
                project_config_map(&dir, &cm.data.unwrap_or_default());
            }
        }
    })
}

/// A plain HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) to `addr` and reads the whole response.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
