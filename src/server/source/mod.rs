//! Where content comes from: a mounted ConfigMap directory, or the ConfigMap itself through the
//! API. Both hand each version of the ConfigMap's data to a [`ContentUpdater`], which serves it
//! only if it is valid.

pub mod configmap;
pub mod dir;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::ServerState;
use crate::publication::Published;

/// One version of the ConfigMap's data as a source saw it, or why it could not be read.
pub type Snapshot = Result<BTreeMap<String, String>, String>;

/// Turns snapshots into served content: valid new content replaces the old atomically; invalid
/// or unreadable content is logged and counted once, and the previous content stays (never
/// serve broken content).
pub struct ContentUpdater {
    state: Arc<ServerState>,
    /// Where the content comes from, for logs.
    origin: String,
    last: Option<Snapshot>,
}

impl ContentUpdater {
    pub fn new(state: Arc<ServerState>, origin: String) -> ContentUpdater {
        ContentUpdater {
            state,
            origin,
            last: None,
        }
    }

    pub fn offer(&mut self, snapshot: Snapshot) {
        if self.last.as_ref() == Some(&snapshot) {
            return;
        }
        let parsed = match &snapshot {
            Ok(data) => Published::from_data(data).map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        self.last = Some(snapshot);
        match parsed {
            Ok(published) => {
                let Some(content) = self.state.content.replace(published, SystemTime::now()) else {
                    return;
                };
                self.state.metrics.content_loaded(&content);
                tracing::info!(
                    source = %self.origin,
                    generation = content.generation,
                    keys = content.keys,
                    etag = content.jwks.etag.to_str().unwrap_or_default(),
                    discovery = content.discovery.is_some(),
                    "serving new content"
                );
            }
            Err(error) => {
                self.state.metrics.content_reload_failed();
                if self.state.content.current().is_some() {
                    tracing::warn!(source = %self.origin, %error, "new content is not valid; still serving the previous content");
                } else {
                    tracing::warn!(source = %self.origin, %error, "content is not valid; nothing to serve yet");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::{JWKS_KEY, MAX_AGE_KEY};

    fn data(jwks: &str) -> Snapshot {
        Ok(BTreeMap::from([
            (JWKS_KEY.to_owned(), jwks.to_owned()),
            (MAX_AGE_KEY.to_owned(), "60".to_owned()),
        ]))
    }

    #[test]
    fn invalid_content_keeps_the_previous_and_is_counted_once() {
        let state = Arc::new(ServerState::default());
        let mut updater = ContentUpdater::new(Arc::clone(&state), "test".into());
        updater.offer(data("{"));
        assert!(state.content.current().is_none());
        updater.offer(data(r#"{"keys":[]}"#));
        let first = state.content.current().map(|c| c.jwks.body.clone());
        assert_eq!(first.as_deref(), Some(&br#"{"keys":[]}"#[..]));
        for _ in 0..3 {
            updater.offer(data(r#"{"keys":"#));
        }
        updater.offer(Err("cannot read".into()));
        assert_eq!(state.content.current().map(|c| c.jwks.body.clone()), first);
        let text = state.metrics.encode(None, SystemTime::now());
        assert!(
            text.contains("jwks_server_content_reload_failures_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("jwks_server_content_reloads_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("jwks_server_content_generation 1\n"),
            "{text}"
        );
    }
}
