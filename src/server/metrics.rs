//! The server's Prometheus metrics (`jwks_server_*`), rendered in the OpenMetrics text format.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::content::Content;
use super::routes::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// The statuses the routes answer with; each (route, status) pair gets a counter handle on
/// first use, so counting a request is one atomic add, not a labelled map lookup.
const STATUSES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::NO_CONTENT,
    StatusCode::NOT_MODIFIED,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::SERVICE_UNAVAILABLE,
];

#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_counters: [[OnceLock<Counter>; STATUSES.len()]; Route::ALL.len()],
    content_reloads: Counter,
    content_reload_failures: Counter,
    content_generation: Gauge,
    content_keys: Gauge,
    content_loaded: Gauge<f64, AtomicU64>,
    content_age: Gauge<f64, AtomicU64>,
    tls_reloads: Counter,
    tls_reload_failures: Counter,
    open_connections: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    pub fn new() -> ServerMetrics {
        let mut metrics = ServerMetrics {
            registry: Registry::with_prefix("jwks_server"),
            requests: Family::default(),
            request_counters: Default::default(),
            content_reloads: Counter::default(),
            content_reload_failures: Counter::default(),
            content_generation: Gauge::default(),
            content_keys: Gauge::default(),
            content_loaded: Gauge::default(),
            content_age: Gauge::default(),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
            open_connections: Gauge::default(),
        };
        metrics.registry.register(
            "requests",
            "HTTP requests answered, by route and status code",
            metrics.requests.clone(),
        );
        metrics.registry.register(
            "content_reloads",
            "Times new valid content was loaded and served",
            metrics.content_reloads.clone(),
        );
        metrics.registry.register(
            "content_reload_failures",
            "Times new content was invalid or unreadable and the previous content was kept",
            metrics.content_reload_failures.clone(),
        );
        metrics.registry.register(
            "content_generation",
            "Version of the content served: 1 for the first loaded, +1 per change; 0 before any",
            metrics.content_generation.clone(),
        );
        metrics.registry.register(
            "content_keys",
            "Keys in the JWK Set served",
            metrics.content_keys.clone(),
        );
        metrics.registry.register_with_unit(
            "content_loaded_timestamp",
            "Unix time at which the content served was loaded",
            Unit::Seconds,
            metrics.content_loaded.clone(),
        );
        metrics.registry.register_with_unit(
            "content_age",
            "Time since the content served was loaded",
            Unit::Seconds,
            metrics.content_age.clone(),
        );
        metrics.registry.register(
            "tls_reloads",
            "Times a changed TLS certificate and key were loaded",
            metrics.tls_reloads.clone(),
        );
        metrics.registry.register(
            "tls_reload_failures",
            "Times changed TLS files were invalid and the previous certificate was kept",
            metrics.tls_reload_failures.clone(),
        );
        metrics.registry.register(
            "open_connections",
            "Client connections open now",
            metrics.open_connections.clone(),
        );
        metrics
    }

    pub fn count_request(&self, route: Route, status: StatusCode) {
        let Some(column) = STATUSES.iter().position(|s| *s == status) else {
            self.requests.get_or_create(&labels(route, status)).inc();
            return;
        };
        let row = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        self.request_counters[row][column]
            .get_or_init(|| self.requests.get_or_create_owned(&labels(route, status)))
            .inc();
    }

    pub fn content_loaded(&self, content: &Content) {
        self.content_reloads.inc();
        self.content_generation
            .set(i64::try_from(content.generation).unwrap_or(i64::MAX));
        self.content_keys
            .set(i64::try_from(content.keys).unwrap_or(i64::MAX));
        self.content_loaded.set(unix_seconds(content.loaded_at));
    }

    pub fn content_reload_failed(&self) {
        self.content_reload_failures.inc();
    }

    pub fn tls_loaded(&self) {
        self.tls_reloads.inc();
    }

    pub fn tls_reload_failed(&self) {
        self.tls_reload_failures.inc();
    }

    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// The metrics text, with the content's age as of `now`.
    pub fn encode(&self, content: Option<&Content>, now: SystemTime) -> String {
        if let Some(content) = content {
            let age = now
                .duration_since(content.loaded_at)
                .unwrap_or_default()
                .as_secs_f64();
            self.content_age.set(age);
        }
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn labels(route: Route, status: StatusCode) -> RequestLabels {
    RequestLabels {
        route: route.label(),
        status: status.as_u16(),
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::Published;

    #[test]
    fn requests_and_reloads_are_counted_with_help_text() {
        let metrics = ServerMetrics::new();
        metrics.count_request(Route::Jwks, StatusCode::OK);
        metrics.count_request(Route::Jwks, StatusCode::OK);
        metrics.count_request(Route::Unknown, StatusCode::NOT_FOUND);
        metrics.count_request(Route::Jwks, StatusCode::IM_A_TEAPOT);
        let loaded_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let content = Content::new(
            Published {
                jwks: r#"{"keys":[{}]}"#.into(),
                discovery: None,
                max_age_seconds: 60,
                jwks_path: crate::publication::JWKS_PATH.into(),
            },
            3,
            loaded_at,
        );
        metrics.content_loaded(&content);
        metrics.content_reload_failed();
        let text = metrics.encode(
            Some(&content),
            loaded_at + std::time::Duration::from_secs(5),
        );
        for line in [
            "# HELP jwks_server_requests HTTP requests answered, by route and status code.",
            "jwks_server_requests_total{route=\"jwks\",status=\"200\"} 2",
            "jwks_server_requests_total{route=\"unknown\",status=\"404\"} 1",
            "jwks_server_requests_total{route=\"jwks\",status=\"418\"} 1",
            "jwks_server_content_reloads_total 1",
            "jwks_server_content_reload_failures_total 1",
            "jwks_server_content_generation 3",
            "jwks_server_content_keys 1",
            "jwks_server_content_loaded_timestamp_seconds 1000.0",
            "jwks_server_content_age_seconds 5.0",
            "jwks_server_open_connections 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
