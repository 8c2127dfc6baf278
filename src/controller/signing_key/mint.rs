//! New keys at the planner's request: generated from the CSPRNG or imported from
//! `spec.importFrom`, with a self-signed certificate when `spec.certificate` asks for one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::api::CertificateSpec;
use crate::jose::{self, KeySpec, PrivateJwk, PrivateKey};
use crate::lifecycle::{KeySource, Minted};

use super::report::Problem;
use crate::api::conditions::KeyReason;

/// Certificates are valid from an hour before issue (clock skew) for ten years: they only carry
/// the key for `x5c`, and verifiers that check them must not see one expire under a live key.
const CERTIFICATE_BACKDATE: Duration = Duration::from_secs(3600);
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);

pub struct KeyMint<'a> {
    pub certificate: Option<&'a CertificateSpec>,
    /// The import source's PEM, read before planning (or why it could not be read).
    pub import: Option<Result<Vec<u8>, Problem>>,
    pub import_source: String,
    pub now: SystemTime,
    /// The private half of every key minted, to be stored before anything publishes it.
    pub minted: BTreeMap<String, PrivateJwk>,
}

impl KeyMint<'_> {
    pub fn mint(&mut self, source: KeySource, spec: KeySpec) -> Result<Minted, Problem> {
        let key = match source {
            KeySource::Generate => PrivateKey::generate(spec).map_err(|e| {
                Problem::new(
                    KeyReason::KeyGenerationFailed,
                    format!("cannot generate a {} key: {e}", spec.algorithm),
                )
            })?,
            KeySource::Import => self.import(spec)?,
        };
        let failed = |e: jose::Error| {
            Problem::new(
                KeyReason::KeyGenerationFailed,
                format!("cannot encode the new key: {e}"),
            )
        };
        let mut jwk = key.to_private_jwk().map_err(failed)?;
        if let Some(certificate) = self.certificate {
            let der = jose::self_signed_certificate(
                &key,
                &certificate.common_name,
                self.now - CERTIFICATE_BACKDATE,
                self.now + CERTIFICATE_VALIDITY,
            )
            .map_err(failed)?;
            jwk = jwk.with_certificate(&der);
        }
        let minted = Minted {
            kid: jwk.kid.clone(),
            spec: KeySpec {
                algorithm: key.algorithm(),
                kind: key.material().kind(),
            },
        };
        self.minted.insert(jwk.kid.clone(), jwk);
        Ok(minted)
    }

    fn import(&self, spec: KeySpec) -> Result<PrivateKey, Problem> {
        let pem = match &self.import {
            Some(Ok(pem)) => pem,
            Some(Err(problem)) => return Err(problem.clone()),
            None => {
                return Err(import_failed(
                    &self.import_source,
                    "no import source".into(),
                ));
            }
        };
        let material = jose::private_key_from_pem(pem)
            .map_err(|e| import_failed(&self.import_source, e.to_string()))?;
        PrivateKey::new(spec.algorithm, material)
            .map_err(|e| import_failed(&self.import_source, e.to_string()))
    }
}

pub fn import_failed(source: &str, reason: String) -> Problem {
    Problem::new(
        KeyReason::ImportFailed,
        format!("cannot import the key from {source}: {reason}"),
    )
}
