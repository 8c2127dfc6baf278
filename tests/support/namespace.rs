//! Clients, a namespace of one's own per test, and the CRDs installed once per binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::conditions;
use kube::{Client, Config};

use super::cluster::shared_control_plane;
use super::waits::{wait_exists, wait_until};
use super::{FIELD_MANAGER, TIMEOUT, repo_root};

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

impl TestNamespace {
    /// Waits for the namespace's default ServiceAccount: until it exists, the ServiceAccount
    /// admission plugin refuses Pods.
    pub async fn default_service_account(&self) -> ServiceAccount {
        let accounts = Api::namespaced(self.client.clone(), &self.name);
        wait_exists(&accounts, "default", TIMEOUT).await
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
