//! The served JWKS against docs/jose-checklist.md (items 1–23, 34–38)
//! and real verifier libraries, end to end: SigningKeys of every signing algorithm → the
//! operator → the publication's ConfigMap → projected into a directory the way a kubelet
//! mounts it → `jwks-operator serve --dir` → HTTP.

use std::path::PathBuf;
use std::process::Command;

use aws_lc_rs::digest;
use base64::Engine;
use jwks_operator::jose;
use serde_json::{Value, json};

use super::support::interop::{RotationVerifier, interop_tools, verify_remotely};
use super::support::{self, ChildProcess, HttpResponse, TIMEOUT, free_port, http, wait_for};
use super::*;

pub const SIGNING_ALGORITHMS: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

const JWKS: &str = "/.well-known/jwks.json";
const DISCOVERY: &str = "/.well-known/openid-configuration";

/// A publication served by `jwks-operator serve` from a kubelet-style projection of its
/// ConfigMap, on 127.0.0.1.
pub struct Served {
    pub addr: String,
    pub issuer: String,
    _server: ChildProcess,
    _kubelet: tokio::task::JoinHandle<()>,
}

impl Served {
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http(&self.addr, "GET", path, headers).await.unwrap()
    }
}

/// RFC 7638 §3: the thumbprint input is the required members, sorted, without whitespace.
/// Written out here, independently of the operator's own code.
fn thumbprint(key: &Value) -> String {
    let members: &[&str] = match key["kty"].as_str().unwrap() {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        other => panic!("unexpected kty {other}"),
    };
    let body: Vec<String> = members
        .iter()
        .map(|m| format!("\"{m}\":\"{}\"", key[*m].as_str().unwrap()))
        .collect();
    let input = format!("{{{}}}", body.join(","));
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(digest::digest(&digest::SHA256, input.as_bytes()))
}

fn b64url(text: &str) -> Vec<u8> {
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "item 18: {text}"
    );
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
        text,
        "item 18: round trip"
    );
    bytes
}

#[test]
fn the_tests_thumbprint_passes_the_rfc_7638_vector() {
    // RFC 7638 §3.1.
    let key = json!({"kty": "RSA", "e": "AQAB", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
    assert_eq!(
        thumbprint(&key),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // RFC 8037 A.3.
    let key =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(
        thumbprint(&key),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

/// A SigningKey of every signing algorithm (RS256 with a certificate) and an encryption key, all
/// selected by a `use: [sig]` publication whose issuer is the served address.
async fn every_signing_algorithm_served(world: &World) -> Served {
    for alg in SIGNING_ALGORITHMS {
        let mut spec = json!({"algorithm": alg});
        if alg == "RS256" {
            spec["certificate"] = json!({"commonName": "rs256.example"});
        }
        world.create_key(&alg.to_lowercase(), in_main(), spec).await;
    }
    world
        .create_key("enc", in_main(), json!({"algorithm": "ECDH-ES+A256KW"}))
        .await;
    // The issuer names the server's address, so the port is chosen first.
    let port = free_port();
    let issuer = format!("http://localhost:{port}");
    world
        .create_main_publication(json!({"issuer": issuer, "server": {"enabled": false}}))
        .await;
    world
        .wait_publication("main", "ten signing keys published", |s| s.keys.len() == 10)
        .await;
    Served::start_on(world, "main", port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_jwks_meets_the_conformance_checklist() {
    let world = World::new().await;
    let served = every_signing_algorithm_served(&world).await;

    // 1, 2, 3, 4, 6, 7: transport.
    let response = served.get(JWKS, &[]).await;
    assert_eq!(response.status, 200, "item 1");
    assert_eq!(
        response.header("content-type"),
        Some("application/jwk-set+json"),
        "item 2"
    );
    assert!(
        !response.body.starts_with(&[0xEF, 0xBB, 0xBF]),
        "item 3: no BOM"
    );
    let body = response.text();
    let strict = jose::lint::lint(
        response.body.as_slice(),
        jose::lint::LintOptions {
            thumbprint_kids: true,
        },
    );
    assert!(strict.is_empty(), "items 3, 9-22: {strict:?}");
    let cache = response.header("cache-control").unwrap();
    let max_age: u64 = cache
        .strip_prefix("public, max-age=")
        .expect("item 4")
        .parse()
        .unwrap();
    assert!(
        max_age > 0 && max_age <= 3600,
        "item 4: 0 < {max_age} <= prePublish (1h)"
    );
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "item 6"
    );
    let preflight = http(
        &served.addr,
        "OPTIONS",
        JWKS,
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await
    .unwrap();
    assert!(
        (200..300).contains(&preflight.status),
        "item 6: preflight {}",
        preflight.status
    );
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        response.body.len() <= 51_200,
        "item 7: {} bytes",
        response.body.len()
    );

    // 5: ETag and 304.
    let etag = response.header("etag").unwrap().to_owned();
    assert!(!etag.starts_with("W/"), "a strong ETag");
    assert_eq!(
        served.get(JWKS, &[("If-None-Match", &etag)]).await.status,
        304,
        "item 5"
    );
    assert_eq!(
        served
            .get(JWKS, &[("If-None-Match", "\"other\"")])
            .await
            .status,
        200
    );

    // 8: a burst of back-to-back requests.
    for _ in 0..100 {
        assert_eq!(served.get(JWKS, &[]).await.status, 200, "item 8");
    }

    // 9-22: structure and encoding, asserted item by item.
    let set: Value = serde_json::from_str(&body).unwrap();
    let keys = set["keys"].as_array().expect("item 9");
    assert_eq!(
        keys.len(),
        10,
        "item 9: every signing key, and no encryption key (use: [sig])"
    );
    let mut kids = Vec::new();
    for key in keys {
        let kty = key["kty"].as_str().unwrap();
        assert!(["RSA", "EC", "OKP"].contains(&kty), "item 10");
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"] {
            assert!(key.get(private).is_none(), "item 11: {private}");
        }
        let kid = key["kid"].as_str().expect("item 12").to_owned();
        assert_eq!(kid, thumbprint(key), "item 13");
        assert_eq!(key["use"], "sig", "item 14");
        assert!(key.get("key_ops").is_none(), "item 15");
        let alg = key["alg"].as_str().expect("item 16");
        match kty {
            "RSA" => {
                let n = b64url(key["n"].as_str().unwrap());
                assert!(n[0] != 0 && n.len() * 8 >= 2048, "items 16, 19");
                assert_eq!(key["e"], "AQAB", "item 19");
                assert!(alg.starts_with("RS") || alg.starts_with("PS"), "item 16");
            }
            "EC" => {
                let (crv, len, expected) = match key["crv"].as_str().unwrap() {
                    "P-256" => ("P-256", 32, "ES256"),
                    "P-384" => ("P-384", 48, "ES384"),
                    _ => ("P-521", 66, "ES512"),
                };
                assert_eq!(
                    b64url(key["x"].as_str().unwrap()).len(),
                    len,
                    "item 20 {crv}"
                );
                assert_eq!(
                    b64url(key["y"].as_str().unwrap()).len(),
                    len,
                    "item 20 {crv}"
                );
                assert_eq!(alg, expected, "item 16");
            }
            _ => {
                assert_eq!(key["crv"], "Ed25519");
                assert_eq!(b64url(key["x"].as_str().unwrap()).len(), 32, "item 21");
                assert_eq!(alg, "EdDSA", "item 16");
            }
        }
        if let Some(x5c) = key.get("x5c") {
            let der = base64::engine::general_purpose::STANDARD
                .decode(x5c[0].as_str().unwrap())
                .expect("item 22: standard base64");
            let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(digest::digest(&digest::SHA256, &der));
            assert_eq!(key["x5t#S256"], hash, "item 22");
        }
        kids.push(kid);
    }
    let distinct: std::collections::BTreeSet<&String> = kids.iter().collect();
    assert_eq!(distinct.len(), kids.len(), "items 12, 17");

    // 23: each published key is the public half of the private key in its Secret.
    for alg in SIGNING_ALGORITHMS {
        let secret = world.secrets.get(&alg.to_lowercase()).await.unwrap();
        let data = secret.data.unwrap();
        let private = jose::PrivateKey::new(
            alg.parse().unwrap(),
            jose::private_key_from_pem(&data["key.pem"].0).unwrap(),
        )
        .unwrap();
        let derived = serde_json::to_value(private.public_key().to_jwk()).unwrap();
        let published = keys
            .iter()
            .find(|k| k["kid"] == derived["kid"])
            .unwrap_or_else(|| panic!("item 23: {alg} not served"));
        for member in ["kty", "alg", "use", "crv", "n", "e", "x", "y"] {
            assert_eq!(
                published.get(member),
                derived.get(member),
                "item 23: {alg} {member}"
            );
        }
    }

    // 34-38: discovery.
    let discovery = served.get(DISCOVERY, &[]).await;
    assert_eq!(discovery.status, 200, "item 34");
    assert_eq!(
        discovery.header("content-type"),
        Some("application/json"),
        "item 34"
    );
    let document: Value = serde_json::from_slice(&discovery.body).unwrap();
    assert_eq!(document["issuer"], served.issuer, "item 34: byte for byte");
    let jwks_uri = document["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{}{JWKS}", served.issuer), "item 35");
    let path = jwks_uri.strip_prefix(&served.issuer).unwrap();
    assert_eq!(
        served.get(path, &[]).await.body,
        response.body,
        "item 35: jwks_uri serves the JWKS"
    );
    for member in [
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(
            !document[member].as_array().unwrap().is_empty(),
            "item 36: {member}"
        );
    }
    let algorithms: Vec<&str> = document["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for alg in SIGNING_ALGORITHMS {
        assert!(algorithms.contains(&alg), "item 37: {alg}");
    }
    assert!(
        algorithms
            .iter()
            .all(|a| *a != "none" && !a.starts_with("HS")),
        "item 38"
    );

    // 5 again: a changed key set changes the ETag.
    world
        .annotate("es256", "jwks-operator.io/rotate", "now")
        .await;
    let changed = wait_for(TIMEOUT, "the new key served", || async {
        let r = served.get(JWKS, &[("If-None-Match", &etag)]).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("status {}", r.status).into())
        }
    })
    .await;
    assert_ne!(changed.header("etag").unwrap(), etag, "item 5");
}

impl Served {
    /// Projects `<publication>-jwks` into a directory and serves it on `port`.
    pub async fn start_on(world: &World, publication: &str, port: u16) -> Served {
        let dir: PathBuf = support::new_temp_dir("projected").unwrap();
        let kubelet = support::kubelet(
            world.ns.client.clone(),
            &world.ns.name,
            &format!("{publication}-jwks"),
            dir.clone(),
        );
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(env!("CARGO_BIN_EXE_jwks-operator"))
            .args(["serve", "--dir"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")]);
        let server = ChildProcess::spawn("serve", command);
        let addr = format!("127.0.0.1:{port}");
        wait_for(TIMEOUT, "the server ready", || async {
            match http(&addr, "GET", "/readyz", &[]).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status).into()),
                Err(e) => Err(e.into()),
            }
        })
        .await;
        Served {
            addr,
            issuer: format!("http://localhost:{port}"),
            _server: server,
            _kubelet: kubelet,
        }
    }
}

/// Checklist items 24–27: a token signed with each Secret's `key.pem` verifies in panva `jose`
/// (`createRemoteJWKSet`), PyJWT (`PyJWKClient`) and go-oidc (discovery, then the JWKS), each
/// fetching from the server; alg-confusion, HS256-with-the-public-key, `none`, unknown-kid and
/// wrong-issuer tokens are refused (go-oidc ignores a JWK's `alg`, so it accepts the
/// alg-mismatch token: recorded by the scripts as that library's expected outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_every_secret_verify_in_jose_pyjwt_and_go_oidc() {
    let tools = tokio::task::spawn_blocking(interop_tools).await.unwrap();
    let world = World::new().await;
    let served = every_signing_algorithm_served(&world).await;
    let mut keys = Vec::new();
    for alg in SIGNING_ALGORITHMS {
        let data = world
            .secrets
            .get(&alg.to_lowercase())
            .await
            .unwrap()
            .data
            .unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        keys.push(json!({"alg": text("alg"), "kid": text("kid"), "key_pem": text("key.pem")}));
    }
    let dir = support::new_temp_dir("interop-remote").unwrap();
    verify_remotely(&tools, &served.issuer, &keys, None, &dir);
}

/// Checklist item 31 and G1/G2 through the whole chain: a signer that always uses the key the
/// Secret holds at that instant, and a `jose` verifier whose JWKS cache lives 1 s (shorter than
/// prePublish), never disagree across rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_with_a_short_cache_never_fails_through_rotations() {
    let node_path = tokio::task::spawn_blocking(interop_tools).await.unwrap()["NODE_PATH"].clone();
    let world = World::new().await;
    world
        .create_main_publication(json!({"server": {"enabled": false}, "cacheMaxAge": "1s"}))
        .await;
    world
        .create_key("rotating", in_main(), rotating("ES256", "6s", "3s", "3s"))
        .await;
    let first = world
        .wait_status("rotating", "a key", |s| active(s).is_some())
        .await;
    let first_kid = active(&first).unwrap().kid.clone();
    world
        .wait_publication("main", "the first key published", |s| !s.keys.is_empty())
        .await;
    let served = Served::start_on(&world, "main", free_port()).await;

    let jwks_uri = format!("http://{}{JWKS}", served.addr);
    let mut verifier = RotationVerifier::start(&jwks_uri, &node_path);

    let mut verified: Vec<String> = Vec::new();
    let mut tokens = 0;
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    // Until a third key signs: two complete handovers, the first key long removed.
    while verified.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {verified:?} signed in 90 s"
        );
        pace.tick().await;
        let kid = match verifier.verify_with(&world.secrets, "rotating").await {
            Ok(kid) => kid,
            Err(verdict) => panic!("token #{tokens} signed with the active key failed: {verdict}"),
        };
        tokens += 1;
        if !verified.contains(&kid) {
            verified.push(kid);
        }
    }
    assert_eq!(verified[0], first_kid);
    eprintln!("{tokens} tokens verified across {} keys", verified.len());
}
