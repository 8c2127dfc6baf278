//! The README's YAML blocks, which the tests apply so that what a reader copies works.

use super::repo_root;

/// Who checks a README YAML block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// A manifest of this project or of Kubernetes itself: the admission test applies it.
    ByAdmission,
    /// A manifest of another project's CRD (Istio, Envoy Gateway): `tests/consumer_recipes.rs`
    /// applies it against that CRD.
    ByConsumerCrd,
    /// A configuration file, not an API object (kube-apiserver's AuthenticationConfiguration):
    /// `tests/apiserver_verifier.rs` runs one.
    AsConfigFile,
}

/// Every ```yaml block of the README, in order, with who checks it.
pub fn readme_yaml_blocks() -> Vec<(String, Checked)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .map(|block| {
            let checked = if block.contains("apiVersion: apiserver.config.k8s.io/") {
                Checked::AsConfigFile
            } else if block.contains("apiVersion: gateway.envoyproxy.io/")
                || block.contains("apiVersion: security.istio.io/")
            {
                Checked::ByConsumerCrd
            } else {
                Checked::ByAdmission
            };
            (block, checked)
        })
        .collect()
}
