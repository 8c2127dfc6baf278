//! Content from a mounted ConfigMap directory, polled.
//!
//! The kubelet writes each version of a ConfigMap into a new hidden directory
//! (`..2026_11_28_10_00_00.123456789/`) and then atomically renames a `..data` symlink to point
//! at it; the visible files (`jwks.json`, …) are symlinks through `..data`. Reading every file
//! through one resolved `..data` target, and checking that the target did not move meanwhile,
//! gives a consistent snapshot: never the JWKS of one version with the max-age of another. A
//! plain directory without `..data` works too (replace its files by rename to be atomic).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ContentUpdater, Snapshot};
use crate::publication::SERVED_KEYS;

/// How often the directory is read; a change is served at most this long after the swap.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The kubelet's symlink to the current version of an atomically updated volume.
const DATA_LINK: &str = "..data";
/// A ConfigMap holds at most 1 MiB; anything larger is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads `dir` now and then every [`POLL_INTERVAL`], offering each snapshot to `updater`.
pub async fn watch(dir: PathBuf, mut updater: ContentUpdater) {
    loop {
        let path = dir.clone();
        match tokio::task::spawn_blocking(move || read_snapshot(&path)).await {
            Ok(snapshot) => updater.offer(snapshot),
            Err(error) => tracing::warn!(%error, "reading the content directory failed"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The ConfigMap data in `dir` as of one `..data` target.
pub fn read_snapshot(dir: &Path) -> Snapshot {
    let mut last_error = String::new();
    // The kubelet deletes the old version right after the swap, so a read that straddles it
    // fails or sees a moved link; reading again gets the new version.
    for _ in 0..3 {
        let target = data_target(dir);
        let base = target
            .as_ref()
            .map_or_else(|| dir.to_owned(), |t| dir.join(t));
        let read = read_files(&base);
        if data_target(dir) == target {
            return read;
        }
        if let Err(error) = read {
            last_error = error;
        }
    }
    Err(if last_error.is_empty() {
        format!("{} keeps changing while being read", dir.display())
    } else {
        last_error
    })
}

fn data_target(dir: &Path) -> Option<PathBuf> {
    std::fs::read_link(dir.join(DATA_LINK)).ok()
}

fn read_files(base: &Path) -> Snapshot {
    let mut data = BTreeMap::new();
    for key in SERVED_KEYS {
        let path = base.join(key);
        match read_text(&path) {
            Ok(text) => {
                data.insert(key.to_owned(), text);
            }
            // Absent keys are for `Published::from_data` to judge (discovery is optional).
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        }
    }
    Ok(data)
}

fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "larger than a ConfigMap can be (1 MiB)",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("jwks-server-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Lays out one version the way the kubelet does.
    fn kubelet_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let versioned = dir.join(version);
        std::fs::create_dir(&versioned).unwrap();
        for (name, text) in files {
            std::fs::write(versioned.join(name), text).unwrap();
            let visible = dir.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new(DATA_LINK).join(name), visible).unwrap();
            }
        }
        symlink(version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join(DATA_LINK)).unwrap();
    }

    #[test]
    fn reads_through_the_kubelet_data_link() {
        let dir = scratch("kubelet");
        kubelet_version(
            &dir,
            "..v1",
            &[("jwks.json", "one"), ("cache-max-age", "60")],
        );
        let first = read_snapshot(&dir).unwrap();
        assert_eq!(first.get("jwks.json").map(String::as_str), Some("one"));
        assert!(!first.contains_key("openid-configuration"));
        kubelet_version(
            &dir,
            "..v2",
            &[
                ("jwks.json", "two"),
                ("cache-max-age", "30"),
                ("openid-configuration", "{}"),
            ],
        );
        std::fs::remove_dir_all(dir.join("..v1")).unwrap();
        let second = read_snapshot(&dir).unwrap();
        assert_eq!(second.get("jwks.json").map(String::as_str), Some("two"));
        assert_eq!(second.get("cache-max-age").map(String::as_str), Some("30"));
        assert_eq!(
            second.get("openid-configuration").map(String::as_str),
            Some("{}")
        );
    }

    #[test]
    fn reads_a_plain_directory() {
        let dir = scratch("plain");
        std::fs::write(dir.join("jwks.json"), "x").unwrap();
        let data = read_snapshot(&dir).unwrap();
        assert_eq!(data.len(), 1);
        assert!(read_snapshot(&dir.join("missing")).unwrap().is_empty());
    }
}
