//! The operator's admin endpoint (linkerd's name for it; read-only): `/metrics`, `/healthz` (the
//! process runs) and `/readyz` (it reaches the API; standby replicas are ready too, or a rolling
//! update never finishes).
//!
//! Clients are bounded as the JWKS server bounds them (`server::limits`): a small connection cap
//! that sheds the stalest connection for a new one, header, write and idle timeouts, and accept
//! errors that back off.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use tokio::net::TcpListener;

use super::metrics::OperatorMetrics;
use crate::server::limits::{ConnectionCap, ConnectionLimits};

/// Scrapers and probes are few (a Prometheus or two, the kubelet's probes), so the cap is small;
/// at it, the stalest connection is shed, so a probe is never locked out. The timeouts are the
/// JWKS server's.
const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 64,
    header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
    idle_timeout: crate::server::IDLE_TIMEOUT,
    write_timeout: crate::server::WRITE_TIMEOUT,
    max_request_head_bytes: crate::server::MAX_REQUEST_HEAD_BYTES,
};

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<OperatorMetrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_within(LIMITS, listener, metrics, ready, shutdown).await;
}

async fn serve_within(
    limits: ConnectionLimits,
    listener: TcpListener,
    metrics: Arc<OperatorMetrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let http = limits.http1();
    let cap = ConnectionCap::new(limits.max_connections);
    let accept = async {
        loop {
            let (stream, _) = cap.accept(|| listener.accept()).await;
            let slot = cap.admit().await;
            let (metrics, ready, http) = (metrics.clone(), ready.clone(), http.clone());
            tokio::spawn(async move {
                let stream = slot.watch(stream, &limits);
                let service = service_fn(move |request| {
                    let response = respond(&request, &metrics, &ready);
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::select! {
                    _ = http.serve_connection(TokioIo::new(stream), service) => {}
                    () = slot.shed() => {}
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
}

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

fn respond<B>(
    request: &Request<B>,
    metrics: &OperatorMetrics,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut response =
                Response::new(Full::new(Bytes::from(metrics.encode(Timestamp::now()))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// Bounds every wait in these tests.
    const DEADLINE: Duration = Duration::from_secs(5);

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn endpoints_answer_as_probes_and_scrapers_expect() {
        let metrics = OperatorMetrics::new();
        let ready = AtomicBool::new(false);
        assert_eq!(
            respond(&get("/healthz"), &metrics, &ready).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&get("/readyz"), &metrics, &ready).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(
            respond(&get("/readyz"), &metrics, &ready).status(),
            StatusCode::OK
        );
        let scrape = respond(&get("/metrics"), &metrics, &ready);
        assert_eq!(scrape.status(), StatusCode::OK);
        assert!(
            scrape.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        assert_eq!(
            respond(&get("/other"), &metrics, &ready).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            respond(&post, &metrics, &ready).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// Serves with `limits` on a loopback port until the returned sender is dropped.
    async fn start(limits: ConnectionLimits) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let ready = Arc::new(AtomicBool::new(true));
        tokio::spawn(serve_within(
            limits,
            listener,
            Arc::new(OperatorMetrics::new()),
            ready,
            async move {
                let _ = stopped.await;
            },
        ));
        (address, stop)
    }

    fn limits(max_connections: usize, header_read_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_read_timeout,
            idle_timeout: DEADLINE * 10,
            write_timeout: DEADLINE * 10,
            max_request_head_bytes: 8 * 1024,
        }
    }

    /// Sends `GET /healthz` on a keep-alive connection and reads the answer.
    async fn healthz(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buffer = [0; 1024];
        while !response.ends_with(b"\r\n\r\nok\n") {
            let read = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
                .await
                .expect("an answer before the deadline")
                .unwrap();
            assert!(read > 0, "closed mid-answer: {response:?}");
            response.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Whether the server closes `stream` (end of stream or reset) before the deadline.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buffer = [0; 1024];
        matches!(
            tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_client_that_sends_no_request_head_is_closed_after_the_header_timeout() {
        let timeout = Duration::from_millis(300);
        let (address, _stop) = start(limits(4, timeout)).await;
        let started = Instant::now();
        let mut silent = TcpStream::connect(address).await.unwrap();
        let mut partial = TcpStream::connect(address).await.unwrap();
        partial
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        assert!(closed(&mut silent).await, "a silent client stays connected");
        assert!(
            closed(&mut partial).await,
            "a half-sent head stays connected"
        );
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn at_the_connection_cap_the_stalest_connection_is_shed_for_a_new_client() {
        let (address, _stop) = start(limits(2, DEADLINE * 10)).await;
        let mut stalest = TcpStream::connect(address).await.unwrap();
        assert!(healthz(&mut stalest).await.starts_with("HTTP/1.1 200 "));
        let mut recent = TcpStream::connect(address).await.unwrap();
        assert!(healthz(&mut recent).await.starts_with("HTTP/1.1 200 "));

        let mut new = TcpStream::connect(address).await.unwrap();
        assert!(healthz(&mut new).await.starts_with("HTTP/1.1 200 "));
        assert!(
            closed(&mut stalest).await,
            "three connections open at a cap of two"
        );
        assert!(healthz(&mut recent).await.starts_with("HTTP/1.1 200 "));
    }
}
