//! The key engine against its standards and against OpenSSL.

mod fixtures;

use std::path::Path;

use fixtures::{openssl, scratch_dir};

use jwks_operator::jose::{
    self, Algorithm, Curve, ImportedKey, Jwk, KeySpec, PrivateJwk, PrivateKey, PublicMaterial, lint,
};
use proptest::prelude::*;

fn generate(alg: Algorithm) -> PrivateKey {
    PrivateKey::generate(KeySpec::new(alg, None, None).expect("spec")).expect("generate")
}

#[test]
fn thumbprint_matches_rfc7638_section_3_1() {
    let jwk = serde_json::json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        jose::thumbprint_of_json(&jwk).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn thumbprint_matches_rfc8037_appendix_a_3() {
    let jwk = serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    });
    assert_eq!(
        jose::thumbprint_of_json(&jwk).unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn ec_coordinates_keep_their_leading_zero_octets() {
    // About 1 in 64 P-256 keys has a coordinate starting with 0x00; search until one does.
    let key = (0..5000)
        .map(|_| generate(Algorithm::Es256))
        .find(|key| match key.public_key().material {
            PublicMaterial::Ec { ref x, ref y, .. } => x[0] == 0 || y[0] == 0,
            _ => false,
        })
        .expect("a key with a leading zero coordinate within 5000 tries");
    let jwk = key.public_key().to_jwk();
    assert_eq!(
        jwk.x.as_deref().map(str::len),
        Some(43),
        "x must be 32 octets"
    );
    assert_eq!(
        jwk.y.as_deref().map(str::len),
        Some(43),
        "y must be 32 octets"
    );
    assert_eq!(jwk.to_public_key().unwrap(), key.public_key());
    let reimported = jose::private_key_from_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    assert_eq!(reimported.public(), key.public_key().material);
}

#[test]
fn jwk_members_are_complete_canonical_and_sorted() {
    for alg in Algorithm::ALL {
        let key = generate(alg);
        let jwk = key.public_key().to_jwk();
        let json = serde_json::to_string(&jwk).unwrap();
        assert_eq!(
            json,
            jose::canonical_json(&jwk).unwrap(),
            "{alg}: member order is not canonical"
        );
        assert_eq!(jwk.alg, alg.name());
        assert_eq!(jwk.key_use, alg.key_use().name());
        assert_eq!(jwk.kid, jose::thumbprint(&key.public_key().material));
        let private = key.to_private_jwk().unwrap();
        assert_eq!(
            private.kid, jwk.kid,
            "{alg}: the private JWK has the public key's thumbprint"
        );
        assert!(
            !json.contains("\"d\""),
            "{alg}: private member in the public JWK"
        );
    }
}

#[test]
fn canonical_json_sorts_members_at_every_depth() {
    let value = serde_json::json!({"b": 1, "a": {"z": true, "y": [ {"d": 1, "c": 2} ]}});
    assert_eq!(
        jose::canonical_json(&value).unwrap(),
        r#"{"a":{"y":[{"c":2,"d":1}],"z":true},"b":1}"#
    );
}

#[test]
fn rsa_private_jwk_members_reconstruct_the_modulus() {
    // n = p·q is the cheapest independent check that p and q were exported correctly.
    let key = generate(Algorithm::Ps256);
    let jwk = serde_json::to_value(key.to_private_jwk().unwrap()).unwrap();
    let decode = |name: &str| {
        let text = jwk[name].as_str().unwrap();
        base64_decode(text)
    };
    let product = multiply(&decode("p"), &decode("q"));
    assert_eq!(product, decode("n"));
}

#[test]
fn certificate_is_published_as_x5c_and_matches_the_key() {
    for alg in [
        Algorithm::Rs256,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Es512,
        Algorithm::EdDsa,
    ] {
        let key = generate(alg);
        let der = day_long_certificate(&key);
        let jwk = key.public_key().to_jwk().with_certificate(&der);
        let set = serde_json::to_vec(&serde_json::json!({ "keys": [jwk] })).unwrap();
        assert_eq!(
            lint::lint(
                &set,
                lint::LintOptions {
                    thumbprint_kids: true
                }
            ),
            vec![],
            "{alg}"
        );

        // The same certificate next to a different key is caught.
        let other = generate(alg).public_key().to_jwk().with_certificate(&der);
        let set = serde_json::to_vec(&serde_json::json!({ "keys": [other] })).unwrap();
        let findings = lint::lint(&set, lint::LintOptions::default());
        assert!(
            findings.iter().any(|f| f.pointer == "/keys/0/x5c/0"),
            "{alg}: {findings:?}"
        );
    }
}

fn algorithm_strategy() -> impl Strategy<Value = KeySpec> {
    let rsa_sizes = prop_oneof![8 => Just(2048u32), 1 => Just(3072u32), 1 => Just(4096u32)];
    let curves = prop::sample::select(Curve::ALL.to_vec());
    (
        prop::sample::select(Algorithm::ALL.to_vec()),
        rsa_sizes,
        curves,
    )
        .prop_map(|(alg, bits, curve)| {
            let key_size = alg.is_rsa().then_some(bits);
            let curve = alg.takes_curve().then_some(curve);
            KeySpec::new(alg, key_size, curve).expect("valid spec")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// PEM → key → JWK → thumbprint is the same however the key travels.
    #[test]
    fn keys_round_trip_through_pem_and_jwk(spec in algorithm_strategy()) {
        let key = PrivateKey::generate(spec).unwrap();
        let public = key.public_key();
        let jwk = public.to_jwk();

        let from_private_pem = jose::private_key_from_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        prop_assert_eq!(PrivateKey::new(spec.algorithm, from_private_pem).unwrap().public_key().to_jwk(), jwk.clone());

        let ImportedKey::Public(from_public_pem) = jose::key_from_pem(public.to_spki_pem().as_bytes()).unwrap() else {
            panic!("SPKI PEM did not import as a public key");
        };
        prop_assert_eq!(&from_public_pem, &public.material);

        let parsed: Jwk = serde_json::from_str(&serde_json::to_string(&jwk).unwrap()).unwrap();
        prop_assert_eq!(parsed.to_public_key().unwrap(), public.clone());
        prop_assert_eq!(jose::thumbprint_of_json(&serde_json::to_value(&jwk).unwrap()).unwrap(), jwk.kid.clone());
        let private_text = serde_json::to_string(&key.to_private_jwk().unwrap()).unwrap();
        let private_json: serde_json::Value = serde_json::from_str(&private_text).unwrap();
        prop_assert_eq!(jose::thumbprint_of_json(&private_json).unwrap(), jwk.kid.clone());
        let private_jwk: PrivateJwk = serde_json::from_str(&private_text).unwrap();
        let parsed = private_jwk.to_private_key().unwrap();
        prop_assert_eq!(parsed.public_key().to_jwk(), jwk.clone());
        prop_assert_eq!(parsed.to_pkcs8_der().unwrap(), key.to_pkcs8_der().unwrap());

        let set = serde_json::to_vec(&serde_json::json!({ "keys": [jwk] })).unwrap();
        prop_assert_eq!(lint::lint(&set, lint::LintOptions { thumbprint_kids: true }), vec![]);

        if spec.algorithm.key_use() == jose::KeyUse::Sig {
            let signature = key.sign(b"header.payload").unwrap();
            prop_assert!(public.verify(b"header.payload", &signature));
            prop_assert!(!public.verify(b"header.payload2", &signature));
            let signature = parsed.sign(b"header.payload").unwrap();
            prop_assert!(public.verify(b"header.payload", &signature));
        }
    }
}

// --- Private JWKs as the keyring Secret holds them. ---

fn private_jwk(alg: Algorithm) -> PrivateJwk {
    generate(alg).to_private_jwk().unwrap()
}

/// The same integer with a leading zero octet: still valid base64url, no longer minimal.
fn with_leading_zero(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode([&[0][..], &base64_decode(text)].concat())
}

/// A self-signed certificate for `api.example`, valid from now for a day.
fn day_long_certificate(key: &PrivateKey) -> Vec<u8> {
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86400);
    jose::self_signed_certificate(key, "api.example", now, now + day).unwrap()
}

fn with_last_byte_flipped(text: &str) -> String {
    use base64::Engine as _;
    let mut bytes = base64_decode(text);
    *bytes.last_mut().unwrap() ^= 0x02;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn private_jwk_that_is_inconsistent_or_not_canonical_is_refused() {
    let mismatch =
        || jose::Error::MalformedJwk("the private members do not match the public key".into());
    let malformed = |reason: &str| jose::Error::MalformedJwk(reason.into());
    let rsa = private_jwk(Algorithm::Rs256);
    let ec = private_jwk(Algorithm::Es256);
    let ed = private_jwk(Algorithm::EdDsa);
    let edit = |jwk: &PrivateJwk, change: &dyn Fn(&mut PrivateJwk)| {
        let mut jwk = jwk.clone();
        change(&mut jwk);
        jwk
    };

    // Each kind with a d that is not its own: one bit flipped, or another key's.
    let mut cases: Vec<(&str, PrivateJwk, jose::Error)> = Vec::new();
    for (flipped, foreign, jwk, alg) in [
        (
            "RSA tampered d",
            "RSA d of another key",
            &rsa,
            Algorithm::Rs256,
        ),
        (
            "EC tampered d",
            "EC d of another key",
            &ec,
            Algorithm::Es256,
        ),
    ] {
        let flip = edit(jwk, &|j| j.d = with_last_byte_flipped(&j.d));
        cases.push((flipped, flip, mismatch()));
        cases.push((
            foreign,
            edit(jwk, &|j| j.d = private_jwk(alg).d),
            mismatch(),
        ));
    }
    cases.extend([
        (
            "RSA p and q swapped",
            edit(&rsa, &|j| std::mem::swap(&mut j.p, &mut j.q)),
            mismatch(),
        ),
        (
            "RSA tampered qi",
            edit(&rsa, &|j| {
                j.qi = j.qi.as_deref().map(with_last_byte_flipped)
            }),
            mismatch(),
        ),
        (
            "RSA missing qi",
            edit(&rsa, &|j| j.qi = None),
            malformed("missing \"qi\""),
        ),
        (
            "RSA p with a leading zero octet",
            edit(&rsa, &|j| j.p = j.p.as_deref().map(with_leading_zero)),
            malformed("\"p\" is not a minimal Base64urlUInt"),
        ),
        (
            "RSA d padded",
            edit(&rsa, &|j| j.d = format!("{}==", j.d)),
            malformed("\"d\" is not unpadded base64url"),
        ),
        (
            "RSA key as ES256",
            edit(&rsa, &|j| j.alg = "ES256".into()),
            jose::Error::AlgorithmMismatch {
                algorithm: Algorithm::Es256,
                kind: jose::KeyKind::Rsa { bits: 2048 },
            },
        ),
        (
            "RS256 for encryption",
            edit(&rsa, &|j| j.key_use = "enc".into()),
            malformed("\"use\" is \"enc\", but RS256 keys are \"sig\""),
        ),
        (
            "EC d of the wrong length",
            edit(&ec, &|j| j.d = with_leading_zero(&j.d)),
            malformed("\"d\" must be 32 bytes"),
        ),
        (
            "EC d wrapped over two lines",
            edit(&ec, &|j| j.d.insert(20, '\n')),
            malformed("\"d\" is not unpadded base64url"),
        ),
        (
            "Ed25519 d of another key",
            edit(&ed, &|j| j.d = private_jwk(Algorithm::EdDsa).d),
            mismatch(),
        ),
        (
            "Ed25519 missing x",
            edit(&ed, &|j| j.x = None),
            malformed("missing \"x\""),
        ),
        (
            "Ed25519 d of the wrong length",
            edit(&ed, &|j| j.d = with_leading_zero(&j.d)),
            malformed("\"d\" must be 32 bytes"),
        ),
        (
            "Ed25519 key for ES256",
            edit(&ed, &|j| j.alg = "ES256".into()),
            jose::Error::AlgorithmMismatch {
                algorithm: Algorithm::Es256,
                kind: jose::KeyKind::Ed25519,
            },
        ),
    ]);
    for (name, jwk, expected) in cases {
        match jwk.to_private_key() {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => {
                assert_eq!(error, expected, "{name}");
                let message = error.to_string();
                assert!(!message.contains('\n'), "{name}: multi-line error");
                assert!(!message.contains(&jwk.d), "{name}: the error shows d");
            }
        }
    }
}

#[test]
fn private_jwk_kid_is_left_to_the_caller() {
    let mut jwk = private_jwk(Algorithm::Es256);
    let thumbprint = std::mem::replace(&mut jwk.kid, "my-key".into());
    let key = jwk.to_private_key().unwrap();
    assert_eq!(key.public_key().to_jwk().kid, thumbprint);
}

#[test]
fn private_jwk_debug_prints_no_private_member() {
    let jwk = private_jwk(Algorithm::Rs256).with_certificate(b"not really DER");
    let debug = format!("{jwk:?}");
    let private = [
        &jwk.d,
        jwk.p.as_ref().unwrap(),
        jwk.q.as_ref().unwrap(),
        jwk.dp.as_ref().unwrap(),
        jwk.dq.as_ref().unwrap(),
        jwk.qi.as_ref().unwrap(),
    ];
    for member in private {
        assert!(!debug.contains(member.as_str()), "{debug}");
    }
    assert!(debug.contains(&jwk.kid), "{debug}");
}

#[test]
fn private_jwk_certificate_matches_the_public_jwk_certificate() {
    for alg in [Algorithm::Rs256, Algorithm::Es384, Algorithm::EdDsa] {
        let key = generate(alg);
        let der = day_long_certificate(&key);
        let private = key.to_private_jwk().unwrap().with_certificate(&der);
        assert_eq!(
            private.to_public_jwk(),
            key.public_key().to_jwk().with_certificate(&der),
            "{alg}"
        );
        let json = serde_json::to_string(&private).unwrap();
        assert_eq!(
            json,
            jose::canonical_json(&private).unwrap(),
            "{alg}: member order is not canonical"
        );
        let parsed: PrivateJwk = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, private, "{alg}");
        assert_eq!(
            parsed.to_private_key().unwrap().public_key(),
            key.public_key(),
            "{alg}"
        );
    }
}

// --- OpenSSL interop: keys in every PEM form OpenSSL writes import to the same JWK. ---

fn import_file(dir: &Path, name: &str) -> ImportedKey {
    let text = std::fs::read(dir.join(name)).unwrap();
    jose::key_from_pem(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn public_of(key: ImportedKey) -> PublicMaterial {
    match key {
        ImportedKey::Private(material) => material.public(),
        ImportedKey::Public(material) => material,
    }
}

type OpensslCase<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);

#[test]
fn openssl_keys_in_every_pem_form_import_to_the_same_jwk() {
    let dir = scratch_dir("openssl-forms");
    // (name, how OpenSSL generates it, how OpenSSL converts it to the other private form)
    let cases: &[OpensslCase] = &[
        (
            "rsa",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pk8",
            ],
            Some(&["pkey", "-in", "rsa.pk8", "-traditional", "-out", "rsa.trad"]),
        ),
        (
            "rsa-trad",
            &["genrsa", "-traditional", "-out", "rsa-trad.trad", "3072"],
            Some(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "rsa-trad.trad",
                "-out",
                "rsa-trad.pk8",
            ]),
        ),
        (
            "p256",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-out",
                "p256.trad",
            ],
            Some(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "p256.trad",
                "-out",
                "p256.pk8",
            ]),
        ),
        (
            "p384",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "p384.trad",
            ],
            Some(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "p384.trad",
                "-out",
                "p384.pk8",
            ]),
        ),
        (
            "p521",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
                "-out",
                "p521.pk8",
            ],
            Some(&["ec", "-in", "p521.pk8", "-out", "p521.trad"]),
        ),
        (
            "ed25519",
            &["genpkey", "-algorithm", "ed25519", "-out", "ed25519.pk8"],
            None,
        ),
    ];
    for (name, generate_args, convert_args) in cases {
        openssl(&dir, generate_args);
        if let Some(convert) = convert_args {
            openssl(&dir, convert);
        }
        let primary = format!("{name}.pk8");
        openssl(
            &dir,
            &[
                "pkey",
                "-in",
                &primary,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
        );

        let expected = public_of(import_file(&dir, &format!("{name}.pub")));
        for form in ["pk8", "trad", "pub"] {
            let file = format!("{name}.{form}");
            if dir.join(&file).exists() {
                assert_eq!(public_of(import_file(&dir, &file)), expected, "{file}");
            }
        }

        // Our own export is read back by OpenSSL as the same public key.
        let ImportedKey::Private(material) = import_file(&dir, &format!("{name}.pk8")) else {
            panic!("not private")
        };
        let key = PrivateKey::new(Algorithm::default_for(material.kind()), material).unwrap();
        std::fs::write(
            dir.join(format!("{name}.ours")),
            key.to_pkcs8_pem().unwrap(),
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "pkey",
                "-in",
                &format!("{name}.ours"),
                "-pubout",
                "-out",
                &format!("{name}.ours.pub"),
            ],
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{name}.ours.pub"))).unwrap(),
            key.public_key().to_spki_pem(),
            "{name}: OpenSSL derives a different public key from our PKCS#8"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap(),
            key.public_key().to_spki_pem(),
            "{name}: our SPKI differs from OpenSSL's"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn import_refuses_bad_input_with_a_clear_error() {
    let dir = scratch_dir("openssl-bad");
    fixtures::write_refused_keys(&dir);
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let two_keys = [read("cert-key.pem"), read("rsa1024.pem")].concat();

    let cases: Vec<(&str, Vec<u8>, jose::Error)> = vec![
        (
            "encrypted PKCS#8",
            read("encrypted.pem"),
            jose::Error::EncryptedPem,
        ),
        (
            "encrypted traditional",
            read("legacy-encrypted.pem"),
            jose::Error::EncryptedPem,
        ),
        (
            "certificate",
            read("cert.pem"),
            jose::Error::CertificateNotKey,
        ),
        (
            "RSA-1024",
            read("rsa1024.pem"),
            jose::Error::RsaKeyTooSmall(1024),
        ),
        (
            "secp256k1 SEC1",
            read("secp256k1.pem"),
            jose::Error::UnsupportedCurve("secp256k1".into()),
        ),
        (
            "secp256k1 PKCS#8",
            read("secp256k1.pk8"),
            jose::Error::UnsupportedCurve("secp256k1".into()),
        ),
        (
            "X25519",
            read("x25519.pem"),
            jose::Error::UnsupportedKeyType("X25519".into()),
        ),
        ("empty", Vec::new(), jose::Error::Empty),
        ("whitespace", b"  \n".to_vec(), jose::Error::Empty),
        (
            "garbage",
            b"this is not a key".to_vec(),
            jose::Error::NotPem,
        ),
        ("two keys", two_keys, jose::Error::SeveralKeys(2)),
    ];
    for (name, input, expected) in cases {
        match jose::key_from_pem(&input) {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => {
                assert_eq!(error, expected, "{name}");
                assert!(
                    !error.to_string().contains('\n'),
                    "{name}: multi-line error"
                );
            }
        }
    }
    // A PEM block whose body is not DER is refused as malformed, not a crash.
    let broken = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert!(matches!(
        jose::key_from_pem(broken),
        Err(jose::Error::MalformedKey { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// Small helpers for the p·q check (no bignum dependency just for a test).
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn multiply(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut result = vec![0u32; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate().rev() {
        let mut carry = 0u32;
        for (j, &y) in b.iter().enumerate().rev() {
            let cell = &mut result[i + j + 1];
            let sum = *cell + u32::from(x) * u32::from(y) + carry;
            *cell = sum & 0xFF;
            carry = sum >> 8;
        }
        result[i] += carry;
    }
    let bytes: Vec<u8> = result.into_iter().map(|v| v as u8).collect();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[first..].to_vec()
}
