//! The ConfigMap data contract between the publication controller and the server.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use base64::Engine;

/// The compact, canonical JWK Set (`{"keys":[…]}`, keys sorted by kid).
pub const JWKS_KEY: &str = "jwks.json";
/// The same bytes under the key Envoy Gateway's `localJWKS` reads (it takes `jwks`, else an
/// arbitrary entry of the ConfigMap, which could be `cache-max-age`).
pub const ENVOY_JWKS_KEY: &str = "jwks";
/// The path the JWK Set is served at; present only when it is not [`JWKS_PATH`], so that
/// publications on the default path keep their ConfigMap as it was.
pub const JWKS_PATH_KEY: &str = "jwks-path";
/// The OIDC discovery document; present only when the publication has an `issuer`.
pub const DISCOVERY_KEY: &str = "openid-configuration";
/// `Cache-Control: max-age` for both documents, in whole seconds.
pub const MAX_AGE_KEY: &str = "cache-max-age";

/// The keys [`Published::from_data`] reads: what a server loads from a mounted ConfigMap.
pub const SERVED_KEYS: [&str; 4] = [JWKS_KEY, MAX_AGE_KEY, DISCOVERY_KEY, JWKS_PATH_KEY];

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Paths the server answers with something other than the JWK Set.
pub const RESERVED_PATHS: [&str; 4] = [DISCOVERY_PATH, "/healthz", "/readyz", "/metrics"];

/// Whether `path` can carry the JWK Set: what the CRD's schema admits (`/`-separated segments of
/// URL-unreserved characters, no `.` or `..` segment) and not a path the server uses otherwise.
/// Checked again here for the server's sake: it serves only content that passed this.
pub fn is_jwks_path(path: &str) -> bool {
    let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    path.len() <= 256
        && path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.chars().all(unreserved)
            })
        })
        && !RESERVED_PATHS.contains(&path)
}

/// The documents one publication serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub jwks: String,
    pub discovery: Option<String>,
    pub max_age_seconds: u64,
    /// Where the JWK Set is served ([`JWKS_PATH`] unless the publication names another).
    pub jwks_path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{key} is not valid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Published {
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([
            (JWKS_KEY.to_owned(), self.jwks.clone()),
            (ENVOY_JWKS_KEY.to_owned(), self.jwks.clone()),
            (MAX_AGE_KEY.to_owned(), self.max_age_seconds.to_string()),
        ]);
        if let Some(discovery) = &self.discovery {
            data.insert(DISCOVERY_KEY.to_owned(), discovery.clone());
        }
        if self.jwks_path != JWKS_PATH {
            data.insert(JWKS_PATH_KEY.to_owned(), self.jwks_path.clone());
        }
        data
    }

    /// Reads the documents back, refusing content a verifier could not use: the server keeps
    /// serving what it had rather than switch to it.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Published, FormatError> {
        let jwks = data.get(JWKS_KEY).ok_or(FormatError::Missing(JWKS_KEY))?;
        let parsed: serde_json::Value =
            serde_json::from_str(jwks).map_err(|e| FormatError::Invalid {
                key: JWKS_KEY,
                reason: e.to_string(),
            })?;
        if !parsed.get("keys").is_some_and(serde_json::Value::is_array) {
            return Err(FormatError::Invalid {
                key: JWKS_KEY,
                reason: "not a JWK Set (no \"keys\" array)".into(),
            });
        }
        let discovery = match data.get(DISCOVERY_KEY) {
            Some(text) => {
                let parsed: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| FormatError::Invalid {
                        key: DISCOVERY_KEY,
                        reason: e.to_string(),
                    })?;
                if !parsed.is_object() {
                    return Err(FormatError::Invalid {
                        key: DISCOVERY_KEY,
                        reason: "not a JSON object".into(),
                    });
                }
                Some(text.clone())
            }
            None => None,
        };
        let max_age_seconds = data
            .get(MAX_AGE_KEY)
            .ok_or(FormatError::Missing(MAX_AGE_KEY))?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| FormatError::Invalid {
                key: MAX_AGE_KEY,
                reason: e.to_string(),
            })?;
        let jwks_path = match data.get(JWKS_PATH_KEY) {
            Some(path) if is_jwks_path(path.trim()) => path.trim().to_owned(),
            Some(path) => {
                return Err(FormatError::Invalid {
                    key: JWKS_PATH_KEY,
                    reason: format!("{path:?} is not a path the JWK Set can be served at"),
                });
            }
            None => JWKS_PATH.to_owned(),
        };
        Ok(Published {
            jwks: jwks.clone(),
            discovery,
            max_age_seconds,
            jwks_path,
        })
    }
}

/// A strong ETag (RFC 9110 §8.8.3) for `bytes`: the quoted base64url of the first 16 octets of
/// their SHA-256.
pub fn strong_etag(bytes: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, bytes);
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16]);
    format!("\"{tag}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Published {
        Published {
            jwks: r#"{"keys":[]}"#.into(),
            discovery: Some(r#"{"issuer":"https://a.example"}"#.into()),
            max_age_seconds: 300,
            jwks_path: JWKS_PATH.into(),
        }
    }

    #[test]
    fn data_round_trips() {
        assert_eq!(
            Published::from_data(&published().to_data()),
            Ok(published())
        );
        let plain = Published {
            discovery: None,
            ..published()
        };
        assert!(!plain.to_data().contains_key(DISCOVERY_KEY));
        assert_eq!(Published::from_data(&plain.to_data()), Ok(plain));
    }

    #[test]
    fn the_served_keys_are_all_a_server_needs() {
        let custom = Published {
            jwks_path: "/openid/v1/jwks".into(),
            ..published()
        };
        let served: BTreeMap<String, String> = custom
            .to_data()
            .into_iter()
            .filter(|(key, _)| SERVED_KEYS.contains(&key.as_str()))
            .collect();
        assert_eq!(Published::from_data(&served), Ok(custom));
    }

    #[test]
    fn envoy_gateway_finds_the_set_under_jwks() {
        let data = published().to_data();
        assert_eq!(data[ENVOY_JWKS_KEY], data[JWKS_KEY]);
    }

    #[test]
    fn a_jwks_path_is_written_only_when_it_is_not_the_default() {
        assert!(!published().to_data().contains_key(JWKS_PATH_KEY));
        let kubernetes_style = Published {
            jwks_path: "/openid/v1/jwks".into(),
            ..published()
        };
        let data = kubernetes_style.to_data();
        assert_eq!(data[JWKS_PATH_KEY], "/openid/v1/jwks");
        assert_eq!(Published::from_data(&data), Ok(kubernetes_style));
    }

    #[test]
    fn only_plain_absolute_paths_can_carry_the_set() {
        for good in [
            "/openid/v1/jwks",
            "/.well-known/jwks.json",
            "/keys",
            "/a-b_c~d.e/f",
        ] {
            assert!(is_jwks_path(good), "{good}");
        }
        let too_long = format!("/{}", "a".repeat(256));
        for bad in [
            "",
            "/",
            "keys",
            "/keys/",
            "//keys",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a b",
            "/a?b",
            "/a#b",
            "/%2e",
            "/healthz",
            "/metrics",
            "/readyz",
            DISCOVERY_PATH,
            &too_long,
        ] {
            assert!(!is_jwks_path(bad), "{bad:?}");
            let mut data = published().to_data();
            data.insert(JWKS_PATH_KEY.into(), bad.into());
            assert!(
                matches!(
                    Published::from_data(&data),
                    Err(FormatError::Invalid {
                        key: JWKS_PATH_KEY,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_a_verifier_cannot_use_is_refused() {
        let mut data = published().to_data();
        data.insert(JWKS_KEY.into(), r#"{"kids":[]}"#.into());
        assert!(Published::from_data(&data).is_err());
        data.insert(JWKS_KEY.into(), "{".into());
        assert!(Published::from_data(&data).is_err());
        let mut data = published().to_data();
        data.insert(MAX_AGE_KEY.into(), "-1".into());
        assert!(Published::from_data(&data).is_err());
        data.remove(JWKS_KEY);
        assert_eq!(
            Published::from_data(&data),
            Err(FormatError::Missing(JWKS_KEY))
        );
    }

    #[test]
    fn etags_are_strong_and_follow_the_content() {
        let a = strong_etag(b"a");
        assert!(a.starts_with('"') && a.ends_with('"') && !a.starts_with("W/"));
        assert_eq!(a, strong_etag(b"a"));
        assert_ne!(a, strong_etag(b"b"));
    }
}
