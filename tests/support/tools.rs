//! Command-line tools the tests drive: the control plane's kubectl, helm and kubeconform.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use super::cluster::shared_control_plane;
use super::{TIMEOUT, repo_root};

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

/// `kubectl apply --server-side -n <namespace> -f <path>`, with `flags` (`--dry-run=server`)
/// before the namespace.
pub async fn kubectl_apply(namespace: &str, path: &Path, flags: &[&str]) -> CommandOutput {
    let path = path.to_string_lossy();
    let mut args = vec!["apply", "--server-side"];
    args.extend_from_slice(flags);
    args.extend(["-n", namespace, "-f", &path]);
    kubectl(&args).await
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
