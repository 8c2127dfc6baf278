//! Self-signed X.509 certificates for `x5c` (RFC 7517 §4.7), through rcgen.

use std::time::SystemTime;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::{Error, PrivateKey, PrivateMaterial};

/// Issues a self-signed certificate for `key`, valid from `not_before` to `not_after`, with
/// `common_name` as subject and DNS name. Returns the DER bytes.
pub fn self_signed_certificate(
    key: &PrivateKey,
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Vec<u8>, Error> {
    let failed = |e: rcgen::Error| Error::Certificate(e.to_string());
    let signature_algorithm: &'static SignatureAlgorithm = match key.material() {
        // The certificate's own signature algorithm is independent of the JWK's `alg`.
        PrivateMaterial::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        PrivateMaterial::Ec(super::Curve::P256, _) => &rcgen::PKCS_ECDSA_P256_SHA256,
        PrivateMaterial::Ec(super::Curve::P384, _) => &rcgen::PKCS_ECDSA_P384_SHA384,
        PrivateMaterial::Ec(super::Curve::P521, _) => &rcgen::PKCS_ECDSA_P521_SHA512,
        PrivateMaterial::Ed25519(_) => &rcgen::PKCS_ED25519,
    };
    let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der()?);
    let signer =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, signature_algorithm).map_err(failed)?;
    let mut params = CertificateParams::new(vec![common_name.to_owned()]).map_err(failed)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let certificate = params.self_signed(&signer).map_err(failed)?;
    Ok(certificate.der().to_vec())
}
