//! A kubelet's view of a ConfigMap: projected files behind an atomically swapped `..data`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kube::Client;
use kube::api::Api;

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
