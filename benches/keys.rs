//! Key-engine benchmark: in-process generation per algorithm, JWK encoding, thumbprint and the
//! lint of a 100-key set, with `openssl genpkey` measured in the same run for comparison.
//!
//! Run: `cargo bench --bench keys` (prints a Markdown table; see docs/benchmarks.md).
//! A plain harness keeps the dependency tree small: medians of repeated wall-clock samples.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use jwks_operator::jose::{self, Algorithm, KeySpec, PrivateKey, lint};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    println!("| operation | samples | median | p90 |");
    println!("|---|---|---|---|");

    let specs = [
        (
            "RSA-2048",
            KeySpec::new(Algorithm::Rs256, Some(2048), None),
            60,
        ),
        (
            "RSA-3072",
            KeySpec::new(Algorithm::Rs256, Some(3072), None),
            20,
        ),
        (
            "RSA-4096",
            KeySpec::new(Algorithm::Rs256, Some(4096), None),
            8,
        ),
        (
            "P-256 (ES256)",
            KeySpec::new(Algorithm::Es256, None, None),
            2000,
        ),
        (
            "P-384 (ES384)",
            KeySpec::new(Algorithm::Es384, None, None),
            2000,
        ),
        (
            "P-521 (ES512)",
            KeySpec::new(Algorithm::Es512, None, None),
            1000,
        ),
        (
            "Ed25519 (EdDSA)",
            KeySpec::new(Algorithm::EdDsa, None, None),
            2000,
        ),
    ];
    for (name, spec, samples) in specs {
        let spec = spec.expect("valid spec");
        report(
            &format!("generate {name} (in-process)"),
            sample((samples / scale).max(3), || {
                black_box(PrivateKey::generate(spec).expect("generate"));
            }),
        );
    }

    for (name, args) in [
        (
            "RSA-2048",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "P-256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("Ed25519", &["-algorithm", "ed25519"][..]),
    ] {
        report(
            &format!("`openssl genpkey` {name} (process)"),
            sample(60 / scale, || {
                let output = Command::new("openssl")
                    .arg("genpkey")
                    .args(args)
                    .output()
                    .expect("openssl");
                assert!(output.status.success());
            }),
        );
    }
    report(
        "`openssl version` (process start-up baseline)",
        sample(60 / scale, || {
            assert!(
                Command::new("openssl")
                    .arg("version")
                    .output()
                    .expect("openssl")
                    .status
                    .success()
            );
        }),
    );

    let rsa = PrivateKey::generate(KeySpec::new(Algorithm::Rs256, None, None).expect("spec"))
        .expect("key");
    let ec = PrivateKey::generate(KeySpec::new(Algorithm::Es256, None, None).expect("spec"))
        .expect("key");
    report(
        "public JWK, RSA-2048",
        sample(20_000 / scale, || {
            black_box(serde_json::to_string(&rsa.public_key().to_jwk()).expect("json"));
        }),
    );
    report(
        "public JWK, P-256",
        sample(20_000 / scale, || {
            black_box(serde_json::to_string(&ec.public_key().to_jwk()).expect("json"));
        }),
    );
    report(
        "private JWK, RSA-2048",
        sample(5_000 / scale, || {
            black_box(rsa.to_private_jwk().expect("jwk"));
        }),
    );
    let material = rsa.public_key().material;
    report(
        "RFC 7638 thumbprint, RSA-2048",
        sample(20_000 / scale, || {
            black_box(jose::thumbprint(&material));
        }),
    );

    let keys: Vec<_> = (0..100)
        .map(|i| {
            let alg = [
                Algorithm::Es256,
                Algorithm::EdDsa,
                Algorithm::Es384,
                Algorithm::Rs256,
            ][i % 4];
            let spec = KeySpec::new(alg, None, None).expect("spec");
            PrivateKey::generate(spec)
                .expect("key")
                .public_key()
                .to_jwk()
        })
        .collect();
    let set = serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("json");
    report(
        &format!("lint a 100-key set ({} bytes)", set.len()),
        sample(200 / scale, || {
            black_box(lint::lint(
                &set,
                lint::LintOptions {
                    thumbprint_kids: true,
                },
            ));
        }),
    );
}

fn sample(samples: usize, mut run: impl FnMut()) -> Vec<Duration> {
    run(); // warm-up
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn report(name: &str, times: Vec<Duration>) {
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {} | {} | {} |",
        times.len(),
        human(at(0.5)),
        human(at(0.9))
    );
}

fn human(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{micros:.1} µs")
    }
}
