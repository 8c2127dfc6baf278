use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jwks_operator::jose::lint::{self, Finding, LintOptions};

use super::{CliError, read_input};

/// Larger bodies are not JWK Sets anyone should serve; the linter reports the size anyway.
const MAX_BODY_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(source: &str, thumbprint_kids: bool) -> Result<ExitCode, CliError> {
    let (document, mut findings) =
        if source.starts_with("http://") || source.starts_with("https://") {
            fetch(source)?
        } else {
            (read_input(Path::new(source))?, Vec::new())
        };
    findings.extend(lint::lint(&document, LintOptions { thumbprint_kids }));
    for finding in &findings {
        println!("{finding}");
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// GETs the URL without following redirects (verifiers refuse them) and checks the transport
/// items of the conformance checklist: status 200, media type, caching and CORS headers.
fn fetch(url: &str) -> Result<(Vec<u8>, Vec<Finding>), CliError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| CliError::Usage(format!("invalid URL {url}: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the HTTP client: {e}")))?;
    runtime.block_on(async {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                CliError::Failed(format!("cannot load the system's CA certificates: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let request = http::Request::get(uri)
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .body(Empty::new())
            .map_err(|e| CliError::Usage(format!("invalid request for {url}: {e}")))?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
            .await
            .map_err(|_| {
                CliError::Usage(format!(
                    "{url}: no response within {}s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
        let findings = transport_findings(response.status(), response.headers());
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| CliError::Usage(format!("{url}: cannot read the body: {e}")))?
            .to_bytes();
        Ok((body.to_vec(), findings))
    })
}

fn transport_findings(status: http::StatusCode, headers: &http::HeaderMap) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |reason: String| {
        findings.push(Finding {
            pointer: "(http)".into(),
            reason,
        })
    };
    let header = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if status != http::StatusCode::OK {
        add(format!(
            "status {status}; verifiers need exactly 200 and never follow redirects"
        ));
    }
    let media_type = header(http::header::CONTENT_TYPE).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if !matches!(
        media_type.as_deref(),
        Some("application/jwk-set+json" | "application/json")
    ) {
        add(format!(
            "Content-Type is {media_type:?}; use application/jwk-set+json"
        ));
    }
    let cache_control = header(http::header::CACHE_CONTROL).unwrap_or("");
    let max_age = cache_control
        .split(',')
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|seconds| seconds.parse::<u64>().ok());
    if !matches!(max_age, Some(seconds) if seconds > 0) {
        add(format!(
            "Cache-Control {cache_control:?} has no positive max-age"
        ));
    }
    if header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none() {
        add("no Access-Control-Allow-Origin header; browser verifiers cannot fetch the set".into());
    }
    findings
}
