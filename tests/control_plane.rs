//! The test control plane itself: CRDs install, the controller-manager does a real cluster's
//! work (garbage collection, namespace deletion, service accounts), and the launcher never
//! leaves a process behind.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::{Condition, conditions};
use support::{ChildProcess, ControlPlane, TIMEOUT, TestNamespace, wait_for};

#[tokio::test]
async fn crds_from_crds_dir_install_and_become_established() {
    let TestNamespace { client, .. } = support::test_namespace().await;
    assert!(
        !support::crd_manifests().is_empty(),
        "no CRD manifests in {} (generate them from the Rust types)",
        support::crds_dir().display()
    );

    // Applying again must be a no-op that still ends Established.
    let names = support::install_crds(&client).await;

    assert!(
        !names.is_empty(),
        "crds/*.yaml hold no CustomResourceDefinition"
    );
    let crds = Api::<CustomResourceDefinition>::all(client);
    for name in &names {
        let crd = crds.get(name).await.expect("installed CRD can be read");
        assert!(
            conditions::is_crd_established().matches_object(Some(&crd)),
            "{name} is not Established"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_shows_rotation_field_descriptions() {
    let TestNamespace { client, .. } = support::test_namespace().await;
    assert!(
        !support::ensure_crds(&client).await.is_empty(),
        "no CRDs found in crds/"
    );

    // The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    let out = wait_for(
        TIMEOUT,
        "kubectl explain signingkey.spec.rotation",
        || async {
            let out = support::kubectl(&["explain", "signingkey.spec.rotation"]).await;
            if out.success() {
                Ok(out.stdout)
            } else {
                Err(out.to_string().into())
            }
        },
    )
    .await;

    for field in ["interval", "prePublish", "gracePeriod"] {
        let description = field_description(&out, field)
            .unwrap_or_else(|| panic!("`{field}` is not listed in kubectl explain output:\n{out}"));
        assert!(
            !description.is_empty(),
            "`{field}` has no description (doc comment) in:\n{out}"
        );
    }
}

/// The description kubectl explain prints under a field line (`  name\t<type>`), joined.
fn field_description(explain: &str, field: &str) -> Option<String> {
    let mut lines = explain.lines().skip_while(|l| {
        let l = l.trim_start();
        !(l.starts_with(field) && l[field.len()..].trim_start().starts_with('<'))
    });
    lines.next()?;
    let description: Vec<&str> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    Some(description.join(" "))
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependent() {
    let TestNamespace { name: ns, client } = support::test_namespace().await;
    let cms = Api::<ConfigMap>::namespaced(client, &ns);
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", None))
        .await
        .expect("owner created");
    let reference = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().expect("owner has a uid"),
        ..OwnerReference::default()
    };
    let dependent = cms
        .create(
            &PostParams::default(),
            &config_map("dependent", Some(reference)),
        )
        .await
        .expect("dependent created");

    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("owner deleted");

    let uid = dependent.metadata.uid.expect("dependent has a uid");
    support::wait_deleted(&cms, "dependent", &uid, TIMEOUT).await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_it_with_its_contents() {
    let TestNamespace { name: ns, client } = support::test_namespace().await;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map("content", None))
        .await
        .expect("config map created");
    let namespaces = Api::<Namespace>::all(client);
    let uid = namespaces
        .get(&ns)
        .await
        .expect("namespace exists")
        .metadata
        .uid
        .expect("namespace has a uid");

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("namespace deleted");

    // Without the namespace controller it would stay Terminating forever.
    support::wait_deleted(&namespaces, &ns, &uid, TIMEOUT).await;
}

#[tokio::test]
async fn new_namespace_gets_a_default_service_account_and_admits_pods() {
    let TestNamespace { name: ns, client } = support::test_namespace().await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    support::wait_until(
        &accounts,
        "default",
        TIMEOUT,
        "to be created",
        conditions::is_created(),
    )
    .await;
    let root_ca = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    support::wait_until(
        &root_ca,
        "kube-root-ca.crt",
        TIMEOUT,
        "to be published",
        conditions::is_created(),
    )
    .await;

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("example.invalid/c".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let created = Api::<Pod>::namespaced(client, &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod admitted");

    // The ServiceAccount admission plugin is on, as in a real cluster: it assigns the default
    // account and mounts its projected token.
    let spec = created.spec.expect("pod has a spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volumes = spec.volumes.unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "no kube-api-access volume in {volumes:?}"
    );
}

fn config_map(name: &str, owner: Option<OwnerReference>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The launcher's own lifecycle. Each of these starts a control plane of its own; one at a time,
// so that a 2-core machine is not asked to start several apiservers at once.

static OWN_CONTROL_PLANE: Mutex<()> = Mutex::new(());
const GONE_WITHIN: Duration = Duration::from_secs(30);

/// Starts a separate control plane that watches `watch_pid`, and checks all of its processes run.
fn start_own_control_plane(watch_pid: u32) -> ControlPlane {
    let dir = support::new_temp_dir("kcp-own").expect("temp dir");
    let cp =
        support::launch_control_plane(watch_pid, &dir, false).unwrap_or_else(|e| panic!("{e}"));
    for (name, pid) in cp.component_pids() {
        assert!(
            support::process_running(pid),
            "{name} ({pid}) is not running after start"
        );
    }
    cp
}

/// Polls until the launcher has exited, no component pid is alive, no process mentions the
/// state directory, and the directory itself is gone (a clean stop removes it).
fn assert_everything_stops(cp: &ControlPlane, pids: &[(String, u32)]) {
    let deadline = std::time::Instant::now() + GONE_WITHIN;
    let dir = cp.dir.to_string_lossy().into_owned();
    loop {
        let launcher_done = cp.launcher_exited();
        let running: Vec<_> = pids
            .iter()
            .filter(|(_, pid)| support::process_running(*pid))
            .collect();
        let mentioning = support::processes_mentioning(&dir);
        if launcher_done && running.is_empty() && mentioning.is_empty() && !cp.dir.exists() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {GONE_WITHIN:?}: launcher exited: {launcher_done}; still running: {running:?}; \
             processes naming {dir}: {mentioning:?}; state dir exists: {}",
            cp.dir.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn launcher_stops_everything_when_the_watched_process_exits() {
    launcher_stops_everything_when_the_watched_sleep_is_killed(Reaped::Before);
}

#[test]
fn launcher_stops_everything_when_the_watched_process_is_a_zombie() {
    // A SIGKILLed test binary stays a zombie until cargo reaps it; that counts as gone.
    launcher_stops_everything_when_the_watched_sleep_is_killed(Reaped::After);
}

/// When the killed sleep is reaped: before the control plane must be gone, or only after.
#[derive(PartialEq)]
enum Reaped {
    Before,
    After,
}

fn launcher_stops_everything_when_the_watched_sleep_is_killed(reaped: Reaped) {
    let _one_at_a_time = OWN_CONTROL_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let mut watched = Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep started");
    let cp = start_own_control_plane(watched.id());
    let pids = cp.component_pids();

    watched.kill().expect("sleep killed");
    if reaped == Reaped::Before {
        watched.wait().expect("sleep reaped");
    }

    assert_everything_stops(&cp, &pids);
    // Reaps it now if not yet; a reaped child's wait returns its status again.
    watched.wait().expect("sleep reaped");
}

#[test]
fn launcher_stops_everything_on_sigterm() {
    let _one_at_a_time = OWN_CONTROL_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let cp = start_own_control_plane(std::process::id());
    let pids = cp.component_pids();

    support::send_signal(cp.launcher.lock().unwrap().id(), "TERM");

    assert_everything_stops(&cp, &pids);
}

#[test]
fn launcher_stops_everything_when_a_component_dies() {
    let _one_at_a_time = OWN_CONTROL_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let cp = start_own_control_plane(std::process::id());
    let pids = cp.component_pids();
    let log = cp.dir.join("launcher.log");

    support::send_signal(cp.component_pid("apiserver"), "KILL");

    // A failed stop keeps the state directory for its logs; check the processes only.
    let deadline = std::time::Instant::now() + GONE_WITHIN;
    while pids.iter().any(|(_, pid)| support::process_running(*pid)) || !cp.launcher_exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "control plane still running; launcher log:\n{}",
            support::tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = cp.launcher.lock().unwrap().wait().expect("launcher status");
    assert!(
        !status.success(),
        "a dead component must make the launcher fail, got {status}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("apiserver") && text.contains("exited unexpectedly"),
        "launcher log:\n{text}"
    );
    assert!(support::processes_mentioning(&cp.dir.to_string_lossy()).is_empty());
    let _ = std::fs::remove_dir_all(&cp.dir);
}

#[test]
fn child_process_captures_output_and_is_killed_on_drop() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo to-stdout; echo to-stderr >&2; exec sleep 300"]);
    let child = ChildProcess::spawn("sh", cmd);
    let pid = child.pid();
    let log_path = child.log_path().to_path_buf();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(child.log().contains("to-stdout") && child.log().contains("to-stderr")) {
        assert!(
            std::time::Instant::now() < deadline,
            "log so far: {:?}",
            child.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);

    assert!(
        !support::process_running(pid),
        "child {pid} survived its guard"
    );
    assert!(!log_path.exists(), "log of a passing test is removed");
}
