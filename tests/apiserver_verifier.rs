//! kube-apiserver as a verifier, end to end: the test control plane's kube-apiserver trusts a
//! JWT issuer (`--authentication-config`, `AuthenticationConfiguration` with one `jwt` issuer)
//! whose discovery document and JWK Set `jwks-operator serve` serves over HTTPS from the
//! publication's ConfigMap. A signer reads the active key from the Secret (`key.jwk`: key and kid
//! from one snapshot; tokens no longer than its `max-token-lifetime-seconds`) and authenticates
//! continuously while the key rotates; the apiserver must accept every token, keep accepting a
//! retired key's token until its `removeAfter`, refuse it after, and refuse a revoked key's token.
//!
//! Numbers (how long the apiserver takes to accept a key it has never seen, how long a removed or
//! revoked key keeps working) go to `target/tmp/apiserver-verifier.json` and docs/benchmarks.md.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use jwks_operator::api::{JwksPublication, SigningKey};
use jwks_operator::jose::PrivateJwk;
use support::{TIMEOUT, wait_for};

const AUDIENCE: &str = "jwks-operator-e2e";
const SUBJECT: &str = "signer";
/// The rotation: fast, so that three rotations fit in a test.
const INTERVAL: &str = "30s";
const PRE_PUBLISH: &str = "10s";
const GRACE_PERIOD: &str = "25s";

/// The issuer: `serve` over HTTPS on a port chosen before the control plane starts, with a
/// self-signed certificate the apiserver trusts as its CA.
struct Issuer {
    url: String,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
}

fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let dir = support::new_temp_dir("apiserver-verifier").unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let port = support::free_port();
        let url = format!("https://127.0.0.1:{port}");
        let config = json!({
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AuthenticationConfiguration",
            "jwt": [{
                "issuer": {
                    "url": url,
                    "audiences": [AUDIENCE],
                    "certificateAuthority": certified.cert.pem(),
                },
                "claimMappings": {"username": {"claim": "sub", "prefix": "jwt:"}},
            }],
        });
        let path = dir.join("authentication-config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        support::use_authentication_config(path);
        Issuer {
            url,
            port,
            cert,
            key,
        }
    })
}

/// A signed JWT for `jwk` (ES256), valid from now for `seconds`.
fn token(jwk: &PrivateJwk, issuer: &str, seconds: i64) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = Timestamp::now().as_second();
    let header = json!({"alg": jwk.alg, "kid": jwk.kid, "typ": "JWT"});
    let claims = json!({
        "iss": issuer, "aud": AUDIENCE, "sub": SUBJECT,
        "iat": now, "nbf": now - 5, "exp": now + seconds,
    });
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let key = jwk.to_private_key().unwrap();
    let signature = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64(&signature))
}

/// Whether the apiserver authenticates `token` as the signer (a SelfSubjectReview, what
/// `kubectl auth whoami` sends).
async fn authenticates(base: &Config, token: &str) -> Result<(), String> {
    let mut config = base.clone();
    config.auth_info = AuthInfo {
        token: Some(token.to_owned().into()),
        ..AuthInfo::default()
    };
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| e.to_string())?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    match user == format!("jwt:{SUBJECT}") {
        true => Ok(()),
        false => Err(format!("authenticated as {user:?}")),
    }
}

/// What a signer following the README's recipe uses now: `key.jwk` carries the key and its kid
/// together, so a rotation between two reads cannot pair one key with the other's kid; tokens
/// live at most `max-token-lifetime-seconds`.
struct SigningKeyNow {
    jwk: PrivateJwk,
    max_lifetime: i64,
}

async fn active_key(secrets: &Api<Secret>, name: &str) -> Option<SigningKeyNow> {
    let data = secrets.get_opt(name).await.ok()??.data?;
    let lifetime = std::str::from_utf8(&data.get("max-token-lifetime-seconds")?.0).ok()?;
    Some(SigningKeyNow {
        jwk: serde_json::from_slice(&data.get("key.jwk")?.0).ok()?,
        max_lifetime: lifetime.parse().ok()?,
    })
}

/// A token of the key the Secret marks active, valid as long as the Secret allows.
fn token_now(key: &SigningKeyNow, issuer: &str) -> String {
    token(&key.jwk, issuer, key.max_lifetime)
}

fn remove_after(key: &SigningKey, kid: &str) -> Option<Timestamp> {
    key.status
        .as_ref()?
        .keys
        .iter()
        .find(|k| k.kid == kid)?
        .remove_after
        .as_ref()
        .map(|t| t.0)
}

#[derive(Default, serde::Serialize)]
struct Measured {
    tokens_accepted: usize,
    tokens_refused: Vec<String>,
    kids_that_signed: Vec<String>,
    /// For each new kid: seconds from the Secret naming it active to its first token accepted.
    new_kid_first_accept_seconds: Vec<f64>,
    /// A retired key's token: accepted until removeAfter; seconds from removeAfter to refused.
    retired_refused_after_remove_after_seconds: Option<f64>,
    /// A revoked key's token: seconds from the revoke annotation to refused.
    revoked_refused_after_seconds: Option<f64>,
}

#[tokio::test]
async fn kube_apiserver_accepts_every_token_across_rotations_and_drops_removed_and_revoked_keys() {
    let issuer = issuer();
    let ns = support::test_namespace().await;
    let cp = support::shared_control_plane().await;
    let _operator = support::start_operator(&ns.name).await;
    let keys: Api<SigningKey> = Api::namespaced(ns.client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let publications: Api<JwksPublication> = Api::namespaced(ns.client.clone(), &ns.name);
    let apply = PatchParams::apply(support::FIELD_MANAGER);
    let key: SigningKey = serde_json::from_value(json!({
        "apiVersion": "jwks-operator.io/v1alpha1", "kind": "SigningKey",
        "metadata": {"name": "issuer-key", "labels": {"jwks-operator.io/publication": "issuer"}},
        "spec": {"algorithm": "ES256", "rotation": {
            "interval": INTERVAL, "prePublish": PRE_PUBLISH, "gracePeriod": GRACE_PERIOD}},
    }))
    .unwrap();
    keys.patch("issuer-key", &apply, &Patch::Apply(&key))
        .await
        .unwrap();
    let publication: JwksPublication = serde_json::from_value(json!({
        "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
        "metadata": {"name": "issuer"},
        "spec": {
            "selector": {"matchLabels": {"jwks-operator.io/publication": "issuer"}},
            "issuer": issuer.url, "jwksPath": "/openid/v1/jwks", "cacheMaxAge": "5s",
            "server": {"enabled": false},
        },
    }))
    .unwrap();
    publications
        .patch("issuer", &apply, &Patch::Apply(&publication))
        .await
        .unwrap();

    // The issuer's server, as a Deployment would run it, reading the ConfigMap through the API.
    let mut serve = std::process::Command::new("setpriv");
    serve
        .args(["--pdeathsig", "KILL", "--"])
        .arg(env!("CARGO_BIN_EXE_jwks-operator"))
        .args(["serve", "--configmap", &format!("{}/issuer-jwks", ns.name)])
        .args(["--listen", &format!("127.0.0.1:{}", issuer.port)])
        .arg("--tls-cert")
        .arg(&issuer.cert)
        .arg("--tls-key")
        .arg(&issuer.key)
        .args(["--log-format", "json"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let _serve = support::ChildProcess::spawn("serve", serve);

    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let base = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();

    // The first key: the apiserver accepts it once it has fetched discovery and the set.
    let first = wait_for(TIMEOUT, "the first active key", || async {
        active_key(&secrets, "issuer-key")
            .await
            .ok_or("no key.jwk yet".into())
    })
    .await;
    assert_eq!(
        first.max_lifetime, 25,
        "the Secret's max-token-lifetime-seconds is gracePeriod"
    );
    wait_for(TIMEOUT, "the apiserver to accept the first key", || async {
        authenticates(&base, &token_now(&first, &issuer.url))
            .await
            .map_err(Into::into)
    })
    .await;
    let first = first.jwk;

    // From here on, every token must be accepted: three rotations while a signer authenticates
    // continuously with whatever key the Secret marks active at that instant.
    let mut measured = Measured::default();
    // The first key's token outlives its key on purpose (beyond the recipe's lifetime): it shows
    // when the apiserver stops accepting a removed key.
    let retired_token = token(&first, &issuer.url, 600);
    let mut seen_active: Vec<(String, Instant)> = vec![(first.kid.clone(), Instant::now())];
    let mut first_remove_after: Option<Timestamp> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen_active.len() < 4
        || measured
            .retired_refused_after_remove_after_seconds
            .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "three rotations and the first key's removal took over 300 s: {} kids, {:?}",
            seen_active.len(),
            first_remove_after
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(now_key) = active_key(&secrets, "issuer-key").await else {
            continue;
        };
        let active = &now_key.jwk;
        if !seen_active.iter().any(|(kid, _)| *kid == active.kid) {
            seen_active.push((active.kid.clone(), Instant::now()));
        }
        match authenticates(&base, &token_now(&now_key, &issuer.url)).await {
            Ok(()) => {
                measured.tokens_accepted += 1;
                if !measured.kids_that_signed.contains(&active.kid) {
                    measured.kids_that_signed.push(active.kid.clone());
                    if let Some((_, at)) = seen_active.iter().find(|(kid, _)| *kid == active.kid) {
                        measured
                            .new_kid_first_accept_seconds
                            .push(at.elapsed().as_secs_f64());
                    }
                }
            }
            Err(error) => measured
                .tokens_refused
                .push(format!("{}: {error}", active.kid)),
        }
        if measured
            .retired_refused_after_remove_after_seconds
            .is_some()
        {
            continue;
        }
        // The first key's long token: accepted until the key's removeAfter, refused after.
        let status = keys.get("issuer-key").await.unwrap();
        first_remove_after = first_remove_after.or(remove_after(&status, &first.kid));
        let now = Timestamp::now();
        match (
            authenticates(&base, &retired_token).await,
            first_remove_after,
        ) {
            (Ok(()), _) => {}
            (Err(_), Some(at)) if now >= at => {
                measured.retired_refused_after_remove_after_seconds =
                    Some(now.duration_since(at).as_secs_f64());
            }
            (Err(error), at) => {
                panic!("the first key's token was refused before its removeAfter ({at:?}): {error}")
            }
        }
    }
    assert!(
        measured.tokens_refused.is_empty(),
        "the apiserver refused tokens of active keys: {:#?}",
        measured.tokens_refused
    );
    assert!(
        measured.kids_that_signed.len() >= 4,
        "{:?}",
        measured.kids_that_signed
    );

    // Revocation: the active key is withdrawn at once; its tokens stop working.
    let revoked = active_key(&secrets, "issuer-key").await.unwrap().jwk;
    let revoked_token = token(&revoked, &issuer.url, 600);
    authenticates(&base, &revoked_token).await.unwrap();
    let annotate = json!({"metadata": {"annotations": {"jwks-operator.io/revoke": revoked.kid}}});
    let revoked_at = Instant::now();
    keys.patch(
        "issuer-key",
        &PatchParams::default(),
        &Patch::Merge(&annotate),
    )
    .await
    .unwrap();
    let replacement = wait_for(TIMEOUT, "a fresh key after the revocation", || async {
        match active_key(&secrets, "issuer-key").await {
            Some(key) if key.jwk.kid != revoked.kid => Ok(key),
            _ => Err("the revoked key is still active".into()),
        }
    })
    .await;
    wait_for(TIMEOUT, "the revoked key's token to be refused", || async {
        // A signer goes on signing with the fresh key; its unknown kid makes the apiserver
        // fetch the set again.
        authenticates(&base, &token_now(&replacement, &issuer.url))
            .await
            .map_err(|e| format!("the fresh key's token was refused: {e}"))?;
        match authenticates(&base, &revoked_token).await {
            Ok(()) => Err("still accepted".into()),
            Err(_) => Ok(()),
        }
    })
    .await;
    measured.revoked_refused_after_seconds = Some(revoked_at.elapsed().as_secs_f64());

    let report = serde_json::to_string_pretty(&measured).unwrap();
    eprintln!("apiserver verifier: {report}");
    let out = support::repo_root().join("target/tmp");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("apiserver-verifier.json"), report).unwrap();
}
