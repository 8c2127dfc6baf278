//! `jwks-operator serve` as a process: the HTTP contract (status codes, caching, CORS, no
//! redirects), hot reload through the kubelet's atomic `..data` swap under load, TLS with
//! certificate reload, request and connection limits, graceful shutdown, and the `--configmap`
//! source against the real test apiserver.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwks_operator::jose::{Algorithm, KeySpec, PrivateKey};
use jwks_operator::publication::strong_etag;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use support::{ChildProcess, Pending, TIMEOUT, wait_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, RootCertStore};

const JWKS: &str = "/.well-known/jwks.json";
const DISCOVERY: &str = "/.well-known/openid-configuration";

// ---------------------------------------------------------------------------------------------
// The HTTP contract

#[tokio::test]
async fn jwks_get_has_type_caching_cors_and_etag_headers() {
    let jwks = jwks_document(2);
    let server =
        Server::start_with(&[("jwks.json", jwks.as_str()), ("cache-max-age", "300")]).await;
    let reply = server.request(Method::GET, JWKS, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(
        reply.header("etag"),
        Some(strong_etag(jwks.as_bytes()).as_str())
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        reply.header("content-length"),
        Some(jwks.len().to_string().as_str())
    );
    assert_eq!(reply.body, jwks.as_bytes());
    // Back-to-back requests (checklist item 8) all succeed.
    for _ in 0..100 {
        assert_eq!(
            server.request(Method::GET, JWKS, &[]).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn head_has_the_get_headers_and_no_body() {
    let server = Server::start_with(&published(&jwks_document(1), Some(&discovery()), 60)).await;
    for path in [JWKS, DISCOVERY, "/healthz", "/readyz"] {
        let get = server.request(Method::GET, path, &[]).await;
        let head = server.request(Method::HEAD, path, &[]).await;
        assert_eq!(head.status, get.status, "{path}");
        for name in [
            "content-type",
            "content-length",
            "cache-control",
            "etag",
            "access-control-allow-origin",
        ] {
            assert_eq!(head.header(name), get.header(name), "{path}: {name}");
        }
        assert!(head.body.is_empty(), "{path}: HEAD has a body");
        assert!(!get.body.is_empty());
    }
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304_and_a_stale_one_200() {
    let jwks = jwks_document(1);
    let server = Server::start_with(&published(&jwks, None, 120)).await;
    let etag = strong_etag(jwks.as_bytes());
    let listed = format!("\"stale\", W/{etag}");
    for value in [etag.as_str(), listed.as_str(), "*"] {
        let reply = server
            .request(Method::GET, JWKS, &[("if-none-match", value)])
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{value}");
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        assert_eq!(reply.header("cache-control"), Some("public, max-age=120"));
        assert!(reply.body.is_empty());
    }
    let reply = server
        .request(Method::GET, JWKS, &[("if-none-match", "\"stale\"")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, jwks.as_bytes());
}

#[tokio::test]
async fn options_is_a_cors_preflight() {
    let server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    let reply = server
        .request(
            Method::OPTIONS,
            JWKS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-request-id"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let methods = reply.header("access-control-allow-methods").unwrap_or("");
    for method in ["GET", "HEAD", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("x-request-id")
    );
    assert!(reply.header("access-control-max-age").is_some());
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in [JWKS, DISCOVERY, "/metrics"] {
            let reply = server.request(method.clone(), path, &[]).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
        }
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_nothing_redirects() {
    let server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    for path in [
        "/",
        "/.well-known/jwks.json/",
        "/.well-known/openid-configuration/",
        "/.well-known",
        "/.well-known/JWKS.json",
        "/jwks.json",
        "/healthz/",
    ] {
        let reply = server.request(Method::GET, path, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.header("location").is_none(), "{path}");
    }
    // A query string does not change what the path names.
    let reply = server
        .request(Method::GET, "/.well-known/jwks.json?x=1", &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn the_set_is_served_at_the_publications_jwks_path_only() {
    let jwks = jwks_document(1);
    let mut files = published(&jwks, Some(&discovery()), 60);
    files.push(("jwks-path", "/openid/v1/jwks".to_owned()));
    let dir = KubeletDir::new("jwks-path");
    dir.publish(&files);
    let server = Server::start(&["--dir", dir.path_str()]).await;
    server.wait_for_body("/openid/v1/jwks", &jwks).await;
    let reply = server.request(Method::GET, "/openid/v1/jwks", &[]).await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    assert_eq!(
        server.request(Method::GET, JWKS, &[]).await.status,
        StatusCode::NOT_FOUND,
        "the default path is not the set's any more"
    );
    assert_eq!(
        server.request(Method::GET, DISCOVERY, &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn discovery_is_served_with_an_issuer_and_404_without() {
    let discovery = discovery();
    let server = Server::start_with(&published(&jwks_document(1), Some(&discovery), 60)).await;
    let reply = server.request(Method::GET, DISCOVERY, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("etag"),
        Some(strong_etag(discovery.as_bytes()).as_str())
    );
    assert_eq!(reply.body, discovery.as_bytes());

    let without = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    let reply = without.request(Method::GET, DISCOVERY, &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nothing_is_served_and_not_ready_until_valid_content_loads() {
    let dir = KubeletDir::new("not-ready");
    let server = Server::start(&["--dir", dir.path_str()]).await;
    assert_eq!(
        server.request(Method::GET, "/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.request(Method::GET, "/readyz", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let reply = server.request(Method::GET, JWKS, &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // Invalid content does not make it ready either.
    dir.publish(&[("jwks.json", "{\"keys\":{}}"), ("cache-max-age", "60")]);
    server
        .wait_for_metric("jwks_server_content_reload_failures_total", 1.0)
        .await;
    assert_eq!(
        server.request(Method::GET, "/readyz", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let jwks = jwks_document(1);
    dir.publish(&published(&jwks, None, 60));
    server.wait_for_body(JWKS, &jwks).await;
    assert_eq!(
        server.request(Method::GET, "/readyz", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    let jwks_ok = "jwks_server_requests_total{route=\"jwks\",status=\"200\"}";
    let not_found = "jwks_server_requests_total{route=\"unknown\",status=\"404\"}";
    let before = server.request(Method::GET, "/metrics", &[]).await;
    let before = String::from_utf8_lossy(&before.body).into_owned();
    server.request(Method::GET, JWKS, &[]).await;
    server.request(Method::GET, JWKS, &[]).await;
    server.request(Method::GET, "/nope", &[]).await;
    let reply = server.request(Method::GET, "/metrics", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(
        metric(&text, jwks_ok) - metric(&before, jwks_ok),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, not_found) - metric(&before, not_found),
        1.0,
        "{text}"
    );
    for line in [
        "jwks_server_content_reloads_total 1",
        "jwks_server_content_reload_failures_total 0",
        "jwks_server_content_generation 1",
        "jwks_server_content_keys 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    for name in [
        "content_age_seconds",
        "content_loaded_timestamp_seconds",
        "open_connections",
    ] {
        assert!(
            text.contains(&format!("# HELP jwks_server_{name} ")),
            "{name}"
        );
    }
}

/// The value of one series in metrics `text` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Hot reload

/// The kubelet's atomic update (new versioned directory, `..data` renamed over) while clients
/// hammer the endpoint: every response is one whole version (body, ETag and max-age agree), never
/// an error; invalid content keeps the last valid version and is counted as a reload failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_swap_under_load_serves_whole_old_or_new_documents_only() {
    let versions = [
        (jwks_document(1), 60),
        (jwks_document(3), 120),
        (jwks_document(2), 180),
    ];
    let dir = KubeletDir::new("hammer");
    dir.publish(&published(&versions[0].0, None, versions[0].1));
    let server = Server::start(&["--dir", dir.path_str()]).await;
    server.wait_for_body(JWKS, &versions[0].0).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for _ in 0..4 {
        let (client, url, stop) = (http_client(), server.url(JWKS), Arc::clone(&stop));
        hammers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(fetch(&client, Method::GET, &url, &[]).await);
            }
            seen
        }));
    }

    for (jwks, max_age) in versions.iter().skip(1).chain(versions.iter().take(1)) {
        dir.publish(&published(jwks, None, *max_age));
        server.wait_for_body(JWKS, jwks).await;
    }
    // A broken version: the last valid one stays, and the failure is counted.
    dir.publish(&[
        ("jwks.json", "{\"keys\":[{\"kty\""),
        ("cache-max-age", "30"),
    ]);
    server
        .wait_for_metric("jwks_server_content_reload_failures_total", 1.0)
        .await;
    let reply = server.request(Method::GET, JWKS, &[]).await;
    assert_eq!(reply.body, versions[0].0.as_bytes());
    assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
    server
        .wait_for_metric("jwks_server_content_reloads_total", 4.0)
        .await;

    stop.store(true, Ordering::Relaxed);
    let mut per_version = [0usize; 3];
    for hammer in hammers {
        for reply in hammer.await.expect("hammer task") {
            let reply = reply.unwrap_or_else(|e| panic!("a request failed during reload: {e}"));
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.headers);
            let index = versions
                .iter()
                .position(|(jwks, _)| reply.body == jwks.as_bytes())
                .unwrap_or_else(|| {
                    panic!(
                        "a response that is no whole version: {}",
                        String::from_utf8_lossy(&reply.body)
                    )
                });
            per_version[index] += 1;
            let (jwks, max_age) = &versions[index];
            assert_eq!(
                reply.header("etag"),
                Some(strong_etag(jwks.as_bytes()).as_str())
            );
            let cache_control = format!("public, max-age={max_age}");
            assert_eq!(reply.header("cache-control"), Some(cache_control.as_str()));
        }
    }
    assert!(
        per_version.iter().all(|&n| n > 0),
        "every version was served: {per_version:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_serves_https_and_picks_up_a_replaced_certificate_without_restart() {
    let first = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let tls = KubeletDir::new("tls");
    tls.publish(&[
        ("tls.crt", &first.cert.pem()),
        ("tls.key", &first.signing_key.serialize_pem()),
    ]);
    let content = KubeletDir::new("tls-content");
    let jwks = jwks_document(1);
    content.publish(&published(&jwks, None, 60));
    let server = Server::start(&[
        "--dir",
        content.path_str(),
        "--tls-cert",
        &tls.path().join("tls.crt").display().to_string(),
        "--tls-key",
        &tls.path().join("tls.key").display().to_string(),
    ])
    .await;
    assert_eq!(server.scheme, "https");

    let mut roots = RootCertStore::empty();
    roots.add(first.cert.der().clone()).unwrap();
    roots.add(second.cert.der().clone()).unwrap();
    let connector = tls_connector(roots);
    let (certificate, reply) = https_get(&connector, server.address, JWKS).await.unwrap();
    assert_eq!(certificate, first.cert.der().to_vec());
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, jwks.as_bytes());
    // Plain HTTP on the TLS port gets no JWKS.
    assert!(
        fetch(
            &http_client(),
            Method::GET,
            &format!("http://{}{JWKS}", server.address),
            &[]
        )
        .await
        .map(|r| r.status != StatusCode::OK)
        .unwrap_or(true)
    );

    tls.publish(&[
        ("tls.crt", &second.cert.pem()),
        ("tls.key", &second.signing_key.serialize_pem()),
    ]);
    wait_for(TIMEOUT, "the new certificate to be served", || async {
        let (certificate, reply) = https_get(&connector, server.address, JWKS).await?;
        if certificate != second.cert.der().to_vec() {
            return Err("still the first certificate".into());
        }
        if reply.body != jwks.as_bytes() {
            return Err("wrong body".into());
        }
        Ok(())
    })
    .await;
    wait_for(TIMEOUT, "the reload to be counted", || async {
        let (_, reply) = https_get(&connector, server.address, "/metrics").await?;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let reloads = metric(&text, "jwks_server_tls_reloads_total");
        if reloads == 1.0 {
            Ok(())
        } else {
            Err(format!("jwks_server_tls_reloads_total is {reloads}").into())
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Limits and shutdown

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    let small = raw_exchange(server.address, &request_with_header(4 * 1024)).await;
    assert!(small.starts_with("HTTP/1.1 200 "), "{small}");
    let big = raw_exchange(server.address, &request_with_header(16 * 1024)).await;
    assert!(
        big.is_empty() || big.starts_with("HTTP/1.1 431 "),
        "an oversized request head got: {big}"
    );
    // The server still serves.
    assert_eq!(
        server.request(Method::GET, JWKS, &[]).await.status,
        StatusCode::OK
    );
}

/// A client that pipelines requests and never reads the answers is disconnected once the server
/// has waited the write timeout for it to take a byte.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected_after_the_write_timeout() {
    let server = Server::start_with(&published(&jwks_document(4), None, 60)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.address).await.unwrap();
    let pipelined = format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(1_000);
    let started = Instant::now();
    // Writes succeed until the kernel's buffers are full of answers and then of requests the
    // server no longer reads; then they wait, and fail once the server closes the connection.
    let error = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Err(error) = stream.write_all(pipelined.as_bytes()).await {
                break error;
            }
        }
    })
    .await
    .expect("the server closes the connection");
    assert!(
        started.elapsed() >= jwks_operator::server::WRITE_TIMEOUT,
        "closed after {:?} ({error})",
        started.elapsed()
    );
}

/// Clients that hold connections without reading cannot lock others out: more connections than
/// the cap pipeline requests and never read an answer, and a new client is still answered at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_pipeline_and_never_read_do_not_lock_out_a_new_client() {
    const STALLED: usize = 1_100;
    const { assert!(STALLED > jwks_operator::server::MAX_CONNECTIONS) };
    // This process holds the stalled clients, and the server (which inherits the limit) as many.
    allow_open_files(STALLED as u64 + 500);
    let server = Server::start_with(&published(&jwks_document(4), None, 60)).await;
    let pipelined = format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(100);
    let mut stalled = Vec::with_capacity(STALLED);
    tokio::time::timeout(TIMEOUT, async {
        for _ in 0..STALLED {
            let socket = TcpSocket::new_v4().unwrap();
            // A small receive window: the answers back up after a few responses.
            socket.set_recv_buffer_size(4096).unwrap();
            let mut stream = socket.connect(server.address).await.unwrap();
            stream.write_all(pipelined.as_bytes()).await.unwrap();
            stalled.push(stream);
        }
    })
    .await
    .expect("the stalling clients connect and send their requests");

    let request = format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        raw_exchange(server.address, request.as_bytes()),
    )
    .await
    .expect("a new client is answered within 2 s");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let scrape = tokio::time::timeout(
        Duration::from_secs(2),
        raw_exchange(server.address, request),
    )
    .await
    .expect("a scrape is answered within 2 s");
    let open = metric(&scrape, "jwks_server_open_connections");
    assert!(
        (1.0..=jwks_operator::server::MAX_CONNECTIONS as f64).contains(&open),
        "open connections: {open}"
    );
    drop(stalled);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut server = Server::start_with(&published(&jwks_document(1), None, 60)).await;
    // An idle keep-alive connection, which must not hold up the exit...
    let idle = TcpStream::connect(server.address).await.unwrap();
    let (mut idle_sender, idle_connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(idle))
            .await
            .unwrap();
    let idle_task = tokio::spawn(idle_connection);
    let request = Request::get(JWKS)
        .header("host", "x")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        idle_sender.send_request(request).await.unwrap().status(),
        StatusCode::OK
    );
    // ...and a request whose head is only half sent when the signal comes.
    let mut in_flight = TcpStream::connect(server.address).await.unwrap();
    in_flight
        .write_all(format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    // The server accepts connections in the order they arrive: once a connection made after the
    // in-flight one is answered, the in-flight one has been accepted too (not merely queued in
    // the kernel's backlog, which a listener closing would reset).
    let mut later = TcpStream::connect(server.address).await.unwrap();
    later
        .write_all(
            format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    later.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    server.process.signal("TERM");
    wait_for(TIMEOUT, "the server to stop accepting", || async {
        match server
            .process
            .log()
            .contains("stopped accepting connections")
        {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    })
    .await;
    assert!(
        TcpStream::connect(server.address).await.is_err(),
        "new connections are refused once shutdown began"
    );
    in_flight.write_all(b"\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, in_flight.read_to_string(&mut response))
        .await
        .expect("the in-flight request is answered")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    tokio::time::timeout(TIMEOUT, idle_task)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();

    let status = wait_for(TIMEOUT, "the server to exit", || {
        let status = server.process.try_status();
        async move { status.ok_or_else(|| "still running".into()) }
    })
    .await;
    assert!(status.success(), "exit status {status}");
}

/// Behind a Service, a terminating pod goes on receiving new connections until kube-proxy has
/// removed it: with `--shutdown-delay-seconds`, new connections are still answered after
/// SIGTERM, and only then does the server drain and exit (tests/node.rs shows the refused
/// connection this prevents, on a real node).
#[tokio::test]
async fn sigterm_with_a_shutdown_delay_keeps_answering_new_connections_first() {
    let dir = KubeletDir::new("content");
    let jwks = jwks_document(1);
    dir.publish(&published(&jwks, None, 60));
    let mut server =
        Server::start(&["--dir", dir.path_str(), "--shutdown-delay-seconds", "3"]).await;
    server.wait_for_body(JWKS, &jwks).await;

    server.process.signal("TERM");
    wait_for(TIMEOUT, "the shutdown delay to begin", || async {
        match server
            .process
            .log()
            .contains("still accepting for the shutdown delay")
        {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    })
    .await;
    let request = format!("GET {JWKS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(server.address, request.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.ends_with(&jwks),
        "a new connection during the delay: {response}"
    );

    let status = wait_for(TIMEOUT, "the server to exit", || {
        let status = server.process.try_status();
        async move { status.ok_or_else(|| "still running".into()) }
    })
    .await;
    assert!(status.success(), "exit status {status}");
    assert!(
        server
            .process
            .log()
            .contains("stopped accepting connections")
    );
}

// ---------------------------------------------------------------------------------------------
// The ConfigMap source

#[tokio::test]
async fn configmap_source_serves_the_configmap_and_follows_updates() {
    let ns = support::test_namespace().await;
    let cp = support::shared_control_plane().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let first = jwks_document(1);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("main-jwks".into()),
            ..ObjectMeta::default()
        },
        data: Some(to_map(&published(&first, None, 60))),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    // A ConfigMap of the same name elsewhere must not be picked up.
    let other = ConfigMap {
        metadata: ObjectMeta {
            name: Some("main-jwks-other".into()),
            ..ObjectMeta::default()
        },
        data: Some(to_map(&published(&jwks_document(2), None, 60))),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &other)
        .await
        .unwrap();

    let target = format!("{}/main-jwks", ns.name);
    let server = Server::start_env(
        &["--configmap", &target],
        &[("KUBECONFIG", cp.kubeconfig.as_os_str())],
    )
    .await;
    server.wait_for_body(JWKS, &first).await;

    let second = jwks_document(2);
    let discovery = discovery();
    let patch = serde_json::json!({
        "data": to_map(&published(&second, Some(&discovery), 90)),
    });
    config_maps
        .patch("main-jwks", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    server.wait_for_body(JWKS, &second).await;
    let reply = server.request(Method::GET, DISCOVERY, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, discovery.as_bytes());
    assert_eq!(reply.header("cache-control"), Some("public, max-age=90"));

    // Broken content is refused; the last valid content stays.
    let patch = serde_json::json!({"data": {"cache-max-age": "soon"}});
    config_maps
        .patch("main-jwks", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    server
        .wait_for_metric("jwks_server_content_reload_failures_total", 1.0)
        .await;
    let reply = server.request(Method::GET, JWKS, &[]).await;
    assert_eq!(reply.body, second.as_bytes());
    assert_eq!(reply.header("cache-control"), Some("public, max-age=90"));
}

// ---------------------------------------------------------------------------------------------
// Helpers: the server process

struct Server {
    process: ChildProcess,
    address: SocketAddr,
    scheme: &'static str,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Server {
    /// A server on a kubelet-style directory holding `files`, once it serves them.
    async fn start_with<T: AsRef<str>>(files: &[(&str, T)]) -> ServerWithDir {
        let dir = KubeletDir::new("content");
        dir.publish(files);
        let server = Server::start(&["--dir", dir.path_str()]).await;
        if let Some((_, jwks)) = files.iter().find(|(name, _)| *name == "jwks.json") {
            server.wait_for_body(JWKS, jwks.as_ref()).await;
        }
        ServerWithDir { server, _dir: dir }
    }

    async fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[]).await
    }

    /// Runs `jwks-operator serve ARGS --listen 127.0.0.1:0` and waits for the address it
    /// reports.
    async fn start_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(env!("CARGO_BIN_EXE_jwks-operator"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info,jwks_operator=debug")
            .env_remove("KUBERNETES_SERVICE_HOST");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let process = ChildProcess::spawn("serve", cmd);
        let (address, tls) = wait_for(TIMEOUT, "the server to listen", || {
            let log = process.log();
            async move { listening_address(&log) }
        })
        .await;
        Server {
            process,
            address,
            scheme: if tls { "https" } else { "http" },
            client: http_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        fetch(&self.client, method.clone(), &self.url(path), headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn wait_for_body(&self, path: &str, body: &str) {
        wait_for(
            TIMEOUT,
            &format!("{path} to serve the expected document"),
            || async {
                let reply = fetch(&self.client, Method::GET, &self.url(path), &[]).await?;
                match reply.status == StatusCode::OK && reply.body == body.as_bytes() {
                    true => Ok(()),
                    false => {
                        Err(
                            format!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body))
                                .into(),
                        )
                    }
                }
            },
        )
        .await;
    }

    /// Waits until the metric `name` (no labels) reaches `at_least`.
    async fn wait_for_metric(&self, name: &str, at_least: f64) {
        wait_for(TIMEOUT, &format!("{name} >= {at_least}"), || async {
            let reply = fetch(&self.client, Method::GET, &self.url("/metrics"), &[]).await?;
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            let value = metric(&text, name);
            match value >= at_least {
                true => Ok(()),
                false => Err(format!("{name} is {value}").into()),
            }
        })
        .await;
    }
}

/// A server and the directory it serves from (removed with it).
struct ServerWithDir {
    server: Server,
    _dir: KubeletDir,
}

impl std::ops::Deref for ServerWithDir {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for ServerWithDir {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// The address of the `listening` log line (JSON logs), and whether it serves TLS.
fn listening_address(log: &str) -> Result<(SocketAddr, bool), Pending> {
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["message"] == "listening" {
            let address = event["address"].as_str().ok_or("no address field")?;
            return Ok((address.parse()?, event["tls"] == true));
        }
    }
    Err(format!("no listening line yet; log:\n{log}").into())
}

// ---------------------------------------------------------------------------------------------
// Helpers: HTTP clients

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, Pending> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(TIMEOUT, client.request(request.body(Empty::new())?))
        .await
        .map_err(|_| "no response")??;
    let (parts, body) = response.into_parts();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

fn tls_connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Each connection a full handshake: a resumed session reports the certificate it began with.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// GETs `path` over a new TLS connection; returns the server's leaf certificate and the reply.
async fn https_get(
    connector: &TlsConnector,
    address: SocketAddr,
    path: &str,
) -> Result<(Vec<u8>, Reply), Pending> {
    let tcp = TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let tls = connector.connect(name, tcp).await?;
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .ok_or("no server certificate")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", address.to_string())
        .body(Empty::new())?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    let reply = Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    };
    Ok((certificate, reply))
}

fn request_with_header(size: usize) -> Vec<u8> {
    format!(
        "GET {JWKS} HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(size)
    )
    .into_bytes()
}

/// Writes `request` on a new connection and reads until the server closes it; write and read
/// errors (the server may close while the request is still being sent) end the exchange.
async fn raw_exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Raises this process's soft limit on open files to at least `needed` (processes it starts
/// inherit it), or fails the test when the hard limit is lower.
fn allow_open_files(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let fields: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open-files limit")
        .split_whitespace()
        .collect();
    let (soft, hard) = (fields[3], fields[4]);
    let limit = |value: &str| value.parse::<u64>().unwrap_or(u64::MAX);
    if limit(soft) >= needed {
        return;
    }
    assert!(
        limit(hard) >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={needed}:{hard}"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit: {status}");
}

// ---------------------------------------------------------------------------------------------
// Helpers: content

/// A directory laid out and updated the way the kubelet mounts a ConfigMap or Secret: each
/// version in a new `..<n>` directory, `..data` renamed over to point at it, and the visible
/// names as symlinks through `..data`.
struct KubeletDir {
    path: PathBuf,
    path_str: String,
    version: std::cell::Cell<u32>,
}

impl KubeletDir {
    fn new(purpose: &str) -> KubeletDir {
        let path = support::new_temp_dir(&format!("serve-{purpose}")).unwrap();
        KubeletDir {
            path_str: path.display().to_string(),
            path,
            version: std::cell::Cell::new(0),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn path_str(&self) -> &str {
        &self.path_str
    }

    fn publish<T: AsRef<str>>(&self, files: &[(&str, T)]) {
        let previous = self.version.get();
        let version = previous + 1;
        self.version.set(version);
        let versioned = self
            .path
            .join(format!("..2026_11_28_00_00_00.{version:09}"));
        std::fs::create_dir(&versioned).unwrap();
        for (name, text) in files {
            std::fs::write(versioned.join(name), text.as_ref()).unwrap();
        }
        let staged = self.path.join("..data_tmp");
        symlink(versioned.file_name().unwrap(), &staged).unwrap();
        std::fs::rename(&staged, self.path.join("..data")).unwrap();
        // Visible names: add the new ones, drop the ones this version lacks.
        for entry in std::fs::read_dir(&self.path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        for (name, _) in files {
            let visible = self.path.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new("..data").join(name), visible).unwrap();
            }
        }
        if previous > 0 {
            let old = self
                .path
                .join(format!("..2026_11_28_00_00_00.{previous:09}"));
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

impl Drop for KubeletDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A JWK Set of `keys` fresh Ed25519 and P-256 keys, as the publication writes it.
fn jwks_document(keys: usize) -> String {
    let keys: Vec<serde_json::Value> = (0..keys)
        .map(|i| {
            let algorithm = if i % 2 == 0 {
                Algorithm::EdDsa
            } else {
                Algorithm::Es256
            };
            let key = PrivateKey::generate(KeySpec::new(algorithm, None, None).unwrap()).unwrap();
            serde_json::to_value(key.public_key().to_jwk()).unwrap()
        })
        .collect();
    jwks_operator::jose::canonical_json(&serde_json::json!({ "keys": keys })).unwrap()
}

fn discovery() -> String {
    serde_json::json!({
        "issuer": "https://auth.example",
        "jwks_uri": "https://auth.example/.well-known/jwks.json",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
    })
    .to_string()
}

/// The ConfigMap data of a publication, as (file name, content) pairs.
fn published(jwks: &str, discovery: Option<&str>, max_age: u64) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("jwks.json", jwks.to_owned()),
        ("cache-max-age", max_age.to_string()),
    ];
    if let Some(discovery) = discovery {
        files.push(("openid-configuration", discovery.to_owned()));
    }
    files
}

fn to_map(files: &[(&str, String)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
