//! [`KeyMint`]: generated keys of every algorithm, certificates on request, and imports that
//! fail with `ImportFailed` without ever quoting the key.

use std::collections::BTreeMap;

use super::fixtures::{private_values, t};
use super::mint::{KeyMint, import_failed};
use super::report::Problem;
use crate::api::CertificateSpec;
use crate::api::conditions::KeyReason;
use crate::jose::{self, Algorithm, KeySpec, PrivateKey};
use crate::lifecycle::KeySource;

fn mint(import: Option<Result<Vec<u8>, Problem>>) -> KeyMint<'static> {
    KeyMint {
        certificate: None,
        import,
        import_source: "Secret a/tls key \"tls.key\"".into(),
        now: t(0).into(),
        minted: BTreeMap::new(),
    }
}

fn spec(algorithm: Algorithm) -> KeySpec {
    KeySpec::new(algorithm, None, None).unwrap()
}

#[test]
fn every_algorithm_generates_a_key_of_its_shape_and_holds_its_private_half() {
    for algorithm in Algorithm::ALL {
        let mut mint = mint(None);
        let minted = mint.mint(KeySource::Generate, spec(algorithm)).unwrap();
        assert_eq!(minted.spec, spec(algorithm), "{algorithm}");
        let held = &mint.minted[&minted.kid];
        assert_eq!(held.alg, algorithm.name());
        assert_eq!(held.to_public_jwk().kid, minted.kid);
        assert_eq!(held.x5c, None);
    }
}

#[test]
fn a_certificate_is_attached_when_the_spec_asks() {
    let certificate = CertificateSpec {
        common_name: "issuer.example".into(),
    };
    let mut mint = KeyMint {
        certificate: Some(&certificate),
        ..mint(None)
    };
    let minted = mint
        .mint(KeySource::Generate, spec(Algorithm::Es256))
        .unwrap();
    assert!(mint.minted[&minted.kid].x5c.is_some());
}

#[test]
fn an_imported_key_keeps_its_thumbprint() {
    let key = PrivateKey::generate(spec(Algorithm::Es256)).unwrap();
    let pem = key.to_pkcs8_pem().unwrap().into_bytes();
    let mut mint = mint(Some(Ok(pem)));
    let minted = mint
        .mint(KeySource::Import, spec(Algorithm::Es256))
        .unwrap();
    assert_eq!(minted.kid, key.to_private_jwk().unwrap().kid);
}

#[test]
fn import_failures_are_import_failed_and_never_quote_the_key() {
    let rsa = PrivateKey::generate(spec(Algorithm::Rs256)).unwrap();
    let rsa_pem = rsa.to_pkcs8_pem().unwrap();
    let mut damaged = rsa_pem.clone().into_bytes();
    damaged.truncate(damaged.len() / 2);
    let unreadable = import_failed("Secret tls", "the Secret does not exist".into());
    let cases = [
        (None, "no import source"),
        (Some(Err(unreadable.clone())), "does not exist"),
        (Some(Ok(damaged)), "cannot import the key from Secret a/tls"),
        // A valid PEM of the wrong kind of key for the algorithm asked for.
        (
            Some(Ok(rsa_pem.clone().into_bytes())),
            "cannot import the key from Secret a/tls",
        ),
    ];
    let secrets = private_values(&rsa.to_private_jwk().unwrap());
    for (import, words) in cases {
        let problem = mint(import)
            .mint(KeySource::Import, spec(Algorithm::Es256))
            .unwrap_err();
        assert_eq!(problem.reason, KeyReason::ImportFailed);
        assert!(problem.message.contains(words), "{}", problem.message);
        assert!(
            !problem.message.contains("PRIVATE KEY"),
            "{}",
            problem.message
        );
        for line in rsa_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!problem.message.contains(line), "{}", problem.message);
        }
        for value in &secrets {
            assert!(!problem.message.contains(value.as_str()));
        }
    }
    assert!(jose::private_key_from_pem(rsa_pem.as_bytes()).is_ok());
}
