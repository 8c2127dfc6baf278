//! Content from the ConfigMap itself, watched through the API: no kubelet propagation delay.
//! Needs `get`, `list` and `watch` on ConfigMaps in its namespace.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

use super::ContentUpdater;

/// Watches `namespace/name` and offers each version of its data to `updater`. A deleted or
/// missing ConfigMap is logged; the content served so far stays.
pub async fn watch(client: Client, namespace: String, name: String, mut updater: ContentUpdater) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(config_map) | watcher::Event::Apply(config_map)) => {
                listed = true;
                updater.offer(Ok(config_map.data.unwrap_or_default()));
            }
            Ok(watcher::Event::InitDone) if !listed => {
                tracing::warn!(%namespace, %name, "the ConfigMap does not exist; waiting for it");
            }
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(%namespace, %name, "the ConfigMap was deleted; still serving the last content");
            }
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "watching the ConfigMap failed; retrying");
            }
        }
    }
}
