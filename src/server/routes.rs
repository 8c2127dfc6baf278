//! The routes and their responses, pure: (route, method, request headers, content) -> response.
//! Every response is built from precomputed values; only `/metrics` formats anything.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ALLOW, CACHE_CONTROL, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use super::content::{Content, Document};
use crate::publication::DISCOVERY_PATH;

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

static ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
static ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static OPENMETRICS: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
/// Browsers clamp this (Chromium to 2 h); a day lets each use its maximum.
static PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("86400");

pub type Body = Full<Bytes>;

/// What a request path names. Paths match exactly: no trailing-slash or case variants, since a
/// redirect to the canonical path would break verifiers that refuse 3xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Jwks,
    Discovery,
    Healthz,
    Readyz,
    Metrics,
    Unknown,
}

impl Route {
    pub const ALL: [Route; 6] = [
        Route::Jwks,
        Route::Discovery,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Unknown,
    ];

    /// The route of `path` when the JWK Set is served at `jwks_path` (the content's, or the
    /// default before any content loaded).
    pub fn of(path: &str, jwks_path: &str) -> Route {
        if path == jwks_path {
            return Route::Jwks;
        }
        match path {
            DISCOVERY_PATH => Route::Discovery,
            HEALTHZ_PATH => Route::Healthz,
            READYZ_PATH => Route::Readyz,
            METRICS_PATH => Route::Metrics,
            _ => Route::Unknown,
        }
    }

    /// The `route` label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Jwks => "jwks",
            Route::Discovery => "openid_configuration",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Unknown => "unknown",
        }
    }
}

/// The response to a request for `route`. `content` is what is served now (`None` until valid
/// content has loaded); `metrics` renders the metrics text, called only for `/metrics`.
pub fn respond(
    route: Route,
    method: &Method,
    headers: &HeaderMap,
    content: Option<&Content>,
    metrics: impl FnOnce() -> String,
) -> Response<Body> {
    if route == Route::Unknown {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method == Method::OPTIONS {
        return preflight(headers);
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, ALLOWED_METHODS.clone());
        return response;
    }
    let response = match route {
        Route::Jwks => document(content.map(|c| &c.jwks), content.is_some(), headers),
        Route::Discovery => document(
            content.and_then(|c| c.discovery.as_ref()),
            content.is_some(),
            headers,
        ),
        Route::Healthz => uncached(text(StatusCode::OK, "ok\n")),
        Route::Readyz if content.is_some() => uncached(text(StatusCode::OK, "ready\n")),
        Route::Readyz => uncached(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid content loaded yet\n",
        )),
        Route::Metrics => {
            let mut response = uncached(text(StatusCode::OK, metrics()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, OPENMETRICS.clone());
            response
        }
        Route::Unknown => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if method == Method::HEAD {
        // HEAD: the GET headers (Content-Length included), no body.
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::default());
    }
    response
}

/// A served document, or 304 when the client already has it (RFC 9110 §13.1.2), or 404 when
/// the publication has no such document, or 503 before any content has loaded.
fn document(document: Option<&Document>, loaded: bool, request: &HeaderMap) -> Response<Body> {
    let Some(document) = document else {
        if loaded {
            return text(StatusCode::NOT_FOUND, "this publication has no issuer\n");
        }
        let mut response = uncached(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid content loaded yet\n",
        ));
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN.clone());
        return response;
    };
    let not_modified = if_none_match(request, &document.etag);
    let mut response = if not_modified {
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(document.body.clone()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, document.content_type.clone());
        headers.insert(CONTENT_LENGTH, document.content_length.clone());
        response
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, document.cache_control.clone());
    headers.insert(ETAG, document.etag.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN.clone());
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    response
}

/// Whether any `If-None-Match` field matches `etag`: `*`, or a list of entity tags compared
/// weakly (RFC 9110 §13.1.2: `W/"x"` matches `"x"`).
fn if_none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|field| tag_list_matches(field.as_bytes(), etag.as_bytes()))
}

fn tag_list_matches(mut list: &[u8], etag: &[u8]) -> bool {
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = list {
            list = rest;
        }
        if list.is_empty() {
            return false;
        }
        if list[0] == b'*' {
            return true;
        }
        if let Some(rest) = list.strip_prefix(b"W/") {
            list = rest;
        }
        if list.first() != Some(&b'"') {
            return false;
        }
        let Some(close) = list[1..].iter().position(|&b| b == b'"') else {
            return false;
        };
        let (tag, rest) = list.split_at(close + 2);
        if tag == etag {
            return true;
        }
        list = rest;
    }
}

/// The CORS preflight answer (Fetch standard): any origin, the safe methods, and whatever
/// request headers the browser asks to send.
fn preflight(request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ALLOW, ALLOWED_METHODS.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS.clone());
    headers.insert(ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE.clone());
    if let Some(requested) = request.get(ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    let mut response = Response::new(Body::default());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT.clone());
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *response.body_mut() = Full::new(body);
    response
}

fn uncached(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, NO_STORE.clone());
    response
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::publication::Published;

    const JWKS: &str = r#"{"keys":[{"kid":"a","kty":"OKP"}]}"#;
    const DISCOVERY: &str = r#"{"issuer":"https://a.example"}"#;

    fn content(discovery: Option<&str>) -> Content {
        Content::new(
            Published {
                jwks: JWKS.into(),
                discovery: discovery.map(str::to_owned),
                max_age_seconds: 600,
                jwks_path: crate::publication::JWKS_PATH.into(),
            },
            1,
            SystemTime::UNIX_EPOCH,
        )
    }

    fn request(
        route: Route,
        method: Method,
        headers: &[(&str, &str)],
        content: Option<&Content>,
    ) -> Response<Body> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        respond(route, &method, &map, content, || "# EOF\n".into())
    }

    fn body(response: Response<Body>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes()
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn paths_match_exactly() {
        use crate::publication::JWKS_PATH;
        assert_eq!(Route::of("/.well-known/jwks.json", JWKS_PATH), Route::Jwks);
        assert_eq!(
            Route::of("/.well-known/openid-configuration", JWKS_PATH),
            Route::Discovery
        );
        for path in [
            "/.well-known/jwks.json/",
            "/.well-known/JWKS.json",
            "//.well-known/jwks.json",
            "/",
            "/healthz/",
        ] {
            assert_eq!(Route::of(path, JWKS_PATH), Route::Unknown, "{path}");
        }
    }

    #[test]
    fn the_set_is_served_at_its_path_only() {
        let custom = "/openid/v1/jwks";
        assert_eq!(Route::of(custom, custom), Route::Jwks);
        assert_eq!(Route::of("/.well-known/jwks.json", custom), Route::Unknown);
        assert_eq!(Route::of("/openid/v1/jwks/", custom), Route::Unknown);
        assert_eq!(
            Route::of("/.well-known/openid-configuration", custom),
            Route::Discovery
        );
        assert_eq!(Route::of("/healthz", custom), Route::Healthz);
    }

    #[test]
    fn jwks_is_served_with_type_caching_and_cors_headers() {
        let content = content(None);
        let response = request(Route::Jwks, Method::GET, &[], Some(&content));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            Some("application/jwk-set+json")
        );
        assert_eq!(
            header(&response, "cache-control"),
            Some("public, max-age=600")
        );
        assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        let etag = crate::publication::strong_etag(JWKS.as_bytes());
        assert_eq!(header(&response, "etag"), Some(etag.as_str()));
        assert_eq!(
            header(&response, "content-length"),
            Some(JWKS.len().to_string().as_str())
        );
        assert_eq!(body(response), JWKS.as_bytes());
    }

    #[test]
    fn head_has_the_get_headers_and_no_body() {
        let content = content(Some(DISCOVERY));
        for route in [
            Route::Jwks,
            Route::Discovery,
            Route::Healthz,
            Route::Metrics,
        ] {
            let get = request(route, Method::GET, &[], Some(&content));
            let head = request(route, Method::HEAD, &[], Some(&content));
            assert_eq!(get.status(), head.status());
            assert_eq!(get.headers(), head.headers(), "{route:?}");
            assert!(body(head).is_empty());
        }
    }

    #[test]
    fn if_none_match_with_the_current_etag_is_304() {
        let content = content(None);
        let etag = crate::publication::strong_etag(JWKS.as_bytes());
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", {etag}");
        let listed_weak = format!("\"x,y\" ,\t{weak}");
        for value in [etag.as_str(), &weak, &listed, &listed_weak, "*"] {
            for method in [Method::GET, Method::HEAD] {
                let response = request(
                    Route::Jwks,
                    method,
                    &[("if-none-match", value)],
                    Some(&content),
                );
                assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
                assert_eq!(header(&response, "etag"), Some(etag.as_str()));
                assert_eq!(
                    header(&response, "cache-control"),
                    Some("public, max-age=600")
                );
                assert_eq!(header(&response, "content-length"), None);
                assert!(body(response).is_empty());
            }
        }
        // Several If-None-Match fields form one list.
        let response = request(
            Route::Jwks,
            Method::GET,
            &[("if-none-match", "\"a\""), ("if-none-match", &etag)],
            Some(&content),
        );
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn a_stale_or_malformed_if_none_match_gets_the_document() {
        let content = content(None);
        let etag = crate::publication::strong_etag(JWKS.as_bytes());
        let unquoted = etag.trim_matches('"').to_owned();
        let unterminated = etag[..etag.len() - 1].to_owned();
        for value in [
            "\"stale\"",
            "W/\"stale\", \"older\"",
            &unquoted,
            &unterminated,
            "",
        ] {
            let response = request(
                Route::Jwks,
                Method::GET,
                &[("if-none-match", value)],
                Some(&content),
            );
            assert_eq!(response.status(), StatusCode::OK, "{value:?}");
            assert_eq!(body(response), JWKS.as_bytes());
        }
    }

    #[test]
    fn options_is_a_cors_preflight() {
        let response = request(
            Route::Jwks,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-trace-id"),
            ],
            None,
        );
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("GET, HEAD, OPTIONS")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("x-trace-id")
        );
        assert_eq!(header(&response, "access-control-max-age"), Some("86400"));
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        let content = content(None);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            for route in [Route::Jwks, Route::Discovery, Route::Readyz, Route::Metrics] {
                let response = request(route, method.clone(), &[], Some(&content));
                assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
                assert_eq!(header(&response, "allow"), Some("GET, HEAD, OPTIONS"));
            }
        }
    }

    #[test]
    fn unknown_paths_are_404_for_every_method() {
        for method in [Method::GET, Method::OPTIONS, Method::POST] {
            let response = request(Route::Unknown, method, &[], None);
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn discovery_is_404_without_an_issuer() {
        let without = content(None);
        let response = request(Route::Discovery, Method::GET, &[], Some(&without));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let with = content(Some(DISCOVERY));
        let response = request(Route::Discovery, Method::GET, &[], Some(&with));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert_eq!(body(response), DISCOVERY.as_bytes());
    }

    #[test]
    fn nothing_is_served_and_not_ready_before_content() {
        for route in [Route::Jwks, Route::Discovery, Route::Readyz] {
            let response = request(route, Method::GET, &[], None);
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{route:?}"
            );
            assert_eq!(header(&response, "cache-control"), Some("no-store"));
        }
        let response = request(Route::Healthz, Method::GET, &[], None);
        assert_eq!(response.status(), StatusCode::OK);
        let content = content(None);
        let response = request(Route::Readyz, Method::GET, &[], Some(&content));
        assert_eq!(response.status(), StatusCode::OK);
    }
}
