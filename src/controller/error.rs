//! What can make a reconcile fail: each error names the step and the object, and falls in a
//! category that the metrics count by (`jwks_operator_reconcile_errors_total{category}`).

use std::fmt::Display;
use std::time::Duration;

use kube::Error as KubeError;

use super::clock::ClockError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed: `action` says what the reconcile was doing, `object` on what.
    #[error("cannot {action} {object}: {error}")]
    Api {
        action: &'static str,
        object: String,
        error: KubeError,
    },
    #[error("cannot encode the key ring of {object}: {error}")]
    Encode {
        object: String,
        error: crate::jose::Error,
    },
    #[error("{0} has no namespace")]
    NotNamespaced(String),
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The watch that fills a controller's cache has ended: the operator is shutting down.
    #[error("the cache of {0} stopped")]
    CacheStopped(&'static str),
}

impl Error {
    /// A write lost an optimistic-concurrency race: retry at once with fresh reads.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { error: KubeError::Api(status), .. } if status.code == 409)
    }

    /// Every value [`Error::category`] gives.
    pub const CATEGORIES: [&'static str; 8] = [
        "conflict",
        "forbidden",
        "api",
        "transport",
        "encode",
        "not_namespaced",
        "clock",
        "cache",
    ];

    /// What kind of failure this is, as a metric label: a few fixed values, never an object.
    pub fn category(&self) -> &'static str {
        match self {
            _ if self.is_conflict() => "conflict",
            Error::Api {
                error: KubeError::Api(status),
                ..
            } if status.code == 403 => "forbidden",
            Error::Api {
                error: KubeError::Api(_),
                ..
            } => "api",
            Error::Api { .. } => "transport",
            Error::Encode { .. } => "encode",
            Error::NotNamespaced(_) => "not_namespaced",
            Error::Clock(_) => "clock",
            Error::CacheStopped(_) => "cache",
        }
    }

    /// How long to wait before retrying after this error.
    pub fn retry_after(&self) -> Duration {
        if self.is_conflict() {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(5)
        }
    }
}

/// Names the step and the object of a failed API request: `api.get(name).await.during("read
/// Secret", &reference)?`.
pub trait During<T> {
    fn during(self, action: &'static str, object: impl Display) -> Result<T, Error>;
}

impl<T> During<T> for Result<T, KubeError> {
    fn during(self, action: &'static str, object: impl Display) -> Result<T, Error> {
        self.map_err(|error| Error::Api {
            action,
            object: object.to_string(),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> Error {
        Err::<(), _>(KubeError::Api(
            Status::failure("nope", "Refused").with_code(code).boxed(),
        ))
        .during("update the status of", "SigningKey auth/api")
        .unwrap_err()
    }

    #[test]
    fn an_api_error_names_the_step_and_the_object() {
        let text = api_error(500).to_string();
        assert!(
            text.starts_with("cannot update the status of SigningKey auth/api: "),
            "{text}"
        );
        assert!(text.contains("nope"), "{text}");
    }

    #[test]
    fn categories_separate_conflicts_from_other_failures() {
        assert_eq!(api_error(409).category(), "conflict");
        assert!(api_error(409).is_conflict());
        assert_eq!(api_error(403).category(), "forbidden");
        assert_eq!(api_error(500).category(), "api");
        assert!(!api_error(500).is_conflict());
        assert_eq!(api_error(409).retry_after(), Duration::from_millis(50));
        assert_eq!(api_error(500).retry_after(), Duration::from_secs(5));
        assert_eq!(Error::Clock(ClockError::NoDate).category(), "clock");
        assert_eq!(Error::CacheStopped("SigningKeys").category(), "cache");
        for error in [api_error(409), api_error(403), api_error(500)] {
            assert!(Error::CATEGORIES.contains(&error.category()));
        }
    }
}
