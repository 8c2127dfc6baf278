//! What the server holds: a publication's documents as ready-to-send bytes and header values,
//! and the store that swaps them atomically when new content loads. The request path only
//! clones an `Arc` and a few reference-counted values out of it: no I/O, no JSON.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;

use crate::publication::{Published, strong_etag};

pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";
pub const DISCOVERY_CONTENT_TYPE: &str = "application/json";

/// One document and the headers that describe it, computed once per load.
#[derive(Debug)]
pub struct Document {
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub content_length: HeaderValue,
    pub cache_control: HeaderValue,
    /// The strong ETag of exactly `body`.
    pub etag: HeaderValue,
}

impl Document {
    fn new(text: &str, content_type: &'static str, cache_control: &HeaderValue) -> Document {
        let body = Bytes::copy_from_slice(text.as_bytes());
        Document {
            content_type: HeaderValue::from_static(content_type),
            content_length: HeaderValue::from(body.len()),
            cache_control: cache_control.clone(),
            etag: etag_header(&body),
            body,
        }
    }
}

/// Everything served for one version of the publication.
#[derive(Debug)]
pub struct Content {
    pub published: Published,
    pub jwks: Document,
    /// `None` when the publication has no issuer.
    pub discovery: Option<Document>,
    /// How many keys the JWK Set holds (for metrics and logs).
    pub keys: usize,
    /// 1 for the first content loaded, +1 for each change after it.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

impl Content {
    pub fn new(published: Published, generation: u64, loaded_at: SystemTime) -> Content {
        let cache_control = cache_control_header(published.max_age_seconds);
        let jwks = Document::new(&published.jwks, JWKS_CONTENT_TYPE, &cache_control);
        let discovery = published
            .discovery
            .as_deref()
            .map(|text| Document::new(text, DISCOVERY_CONTENT_TYPE, &cache_control));
        Content {
            keys: count_keys(&published.jwks),
            jwks,
            discovery,
            published,
            generation,
            loaded_at,
        }
    }
}

/// The content being served, if any has loaded yet.
#[derive(Debug, Default)]
pub struct ContentStore {
    current: RwLock<Option<Arc<Content>>>,
}

impl ContentStore {
    pub fn current(&self) -> Option<Arc<Content>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Serves `published` from now on, unless it is what is served already. Returns the new
    /// content, or `None` when nothing changed.
    pub fn replace(&self, published: Published, now: SystemTime) -> Option<Arc<Content>> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|c| c.published == published) {
            return None;
        }
        let generation = current.as_ref().map_or(0, |c| c.generation) + 1;
        let content = Arc::new(Content::new(published, generation, now));
        *current = Some(Arc::clone(&content));
        Some(content)
    }
}

fn cache_control_header(max_age_seconds: u64) -> HeaderValue {
    // Digits and ASCII letters only: always a valid header value.
    HeaderValue::try_from(format!("public, max-age={max_age_seconds}"))
        .unwrap_or_else(|_| HeaderValue::from_static("public"))
}

fn etag_header(body: &[u8]) -> HeaderValue {
    // Quotes around base64url: always a valid header value.
    HeaderValue::try_from(strong_etag(body)).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn count_keys(jwks: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(jwks)
        .ok()
        .and_then(|set| set.get("keys")?.as_array().map(Vec::len))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn published(jwks: &str, discovery: Option<&str>) -> Published {
        Published {
            jwks: jwks.into(),
            discovery: discovery.map(str::to_owned),
            max_age_seconds: 300,
            jwks_path: crate::publication::JWKS_PATH.into(),
        }
    }

    #[test]
    fn documents_carry_their_headers() {
        let content = Content::new(
            published(r#"{"keys":[{"kid":"a"},{"kid":"b"}]}"#, Some("{}")),
            1,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(content.keys, 2);
        assert_eq!(content.jwks.content_type, "application/jwk-set+json");
        assert_eq!(content.jwks.cache_control, "public, max-age=300");
        assert_eq!(
            content.jwks.content_length,
            content.jwks.body.len().to_string().as_str()
        );
        assert_eq!(
            content.jwks.etag,
            strong_etag(content.jwks.body.as_ref()).as_str()
        );
        let discovery = content.discovery.as_ref().map(|d| &d.content_type);
        assert_eq!(
            discovery.map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }

    #[test]
    fn replacing_with_the_same_content_changes_nothing() {
        let store = ContentStore::default();
        assert!(store.current().is_none());
        let first = store.replace(published(r#"{"keys":[]}"#, None), SystemTime::UNIX_EPOCH);
        assert_eq!(first.map(|c| c.generation), Some(1));
        assert!(
            store
                .replace(published(r#"{"keys":[]}"#, None), SystemTime::UNIX_EPOCH)
                .is_none()
        );
        let second = store.replace(
            published(r#"{"keys":[]}"#, Some("{}")),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(second.map(|c| c.generation), Some(2));
        assert_eq!(store.current().map(|c| c.generation), Some(2));
    }
}
