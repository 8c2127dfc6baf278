//! Reading keys from PEM: PKCS#8, PKCS#1 and SEC1 private keys, and SPKI or PKCS#1 public keys.

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};

use super::der::{self, KeyAlgorithm};
use super::key::{ecdsa_algorithm, modulus_bits};
use super::{Curve, Error, PrivateMaterial, PublicMaterial, RSA_MAX_BITS, RSA_MIN_BITS};

/// Either half of a key pair, as found in a PEM file.
pub enum ImportedKey {
    Private(PrivateMaterial),
    Public(PublicMaterial),
}

/// Reads a private key PEM in any supported form.
pub fn private_key_from_pem(text: &[u8]) -> Result<PrivateMaterial, Error> {
    match key_from_pem(text)? {
        ImportedKey::Private(material) => Ok(material),
        ImportedKey::Public(_) => Err(Error::PublicKeyNotPrivate),
    }
}

/// Reads exactly one key, private or public, from PEM text. Certificates next to a key and
/// OpenSSL's `EC PARAMETERS` block are skipped; anything else ambiguous is refused.
pub fn key_from_pem(text: &[u8]) -> Result<ImportedKey, Error> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty);
    }
    let blocks = pem::parse_many(text).map_err(|e| Error::MalformedPem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(Error::NotPem);
    }
    if blocks.iter().any(is_encrypted) {
        return Err(Error::EncryptedPem);
    }
    let keys: Vec<&pem::Pem> = blocks
        .iter()
        .filter(|block| {
            !matches!(
                block.tag(),
                "CERTIFICATE" | "TRUSTED CERTIFICATE" | "EC PARAMETERS"
            )
        })
        .collect();
    match keys.as_slice() {
        [] if blocks.iter().any(|b| b.tag().ends_with("CERTIFICATE")) => {
            Err(Error::CertificateNotKey)
        }
        [] => Err(Error::UnsupportedPemBlock(blocks[0].tag().to_owned())),
        [block] => key_from_block(block),
        several => Err(Error::SeveralKeys(several.len())),
    }
}

fn is_encrypted(block: &pem::Pem) -> bool {
    block.tag() == "ENCRYPTED PRIVATE KEY"
        || block
            .headers()
            .get("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"))
}

fn key_from_block(block: &pem::Pem) -> Result<ImportedKey, Error> {
    let der = block.contents();
    match block.tag() {
        "PRIVATE KEY" => private_from_pkcs8(der).map(ImportedKey::Private),
        "RSA PRIVATE KEY" => rsa_from_pkcs1(der).map(ImportedKey::Private),
        "EC PRIVATE KEY" => {
            let curve = der::parse_sec1_curve(der)?;
            ec_from_der(curve, der).map(ImportedKey::Private)
        }
        "PUBLIC KEY" => public_from_spki(der).map(ImportedKey::Public),
        "RSA PUBLIC KEY" => {
            let (n, e) = der::parse_rsa_public(der)?;
            check_rsa_bits(&n)?;
            Ok(ImportedKey::Public(PublicMaterial::Rsa { n, e }))
        }
        other => Err(Error::UnsupportedPemBlock(other.to_owned())),
    }
}

fn private_from_pkcs8(der: &[u8]) -> Result<PrivateMaterial, Error> {
    let pkcs8 = der::parse_pkcs8(der)?;
    match pkcs8.algorithm {
        KeyAlgorithm::Rsa => {
            check_rsa_bits(&der::parse_rsa_private(&pkcs8.private_key)?.n)?;
            RsaKeyPair::from_pkcs8(der)
                .map(PrivateMaterial::Rsa)
                .map_err(rejected)
        }
        KeyAlgorithm::Ec(curve) => ec_from_der(curve, der),
        // Accepts PKCS#8 v1 (OpenSSL) and v2 (with the public key, checked against the seed).
        KeyAlgorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(PrivateMaterial::Ed25519)
            .map_err(rejected),
    }
}

fn rsa_from_pkcs1(der: &[u8]) -> Result<PrivateMaterial, Error> {
    check_rsa_bits(&der::parse_rsa_private(der)?.n)?;
    RsaKeyPair::from_der(der)
        .map(PrivateMaterial::Rsa)
        .map_err(rejected)
}

fn ec_from_der(curve: Curve, der: &[u8]) -> Result<PrivateMaterial, Error> {
    EcdsaKeyPair::from_private_key_der(ecdsa_algorithm(curve), der)
        .map(|pair| PrivateMaterial::Ec(curve, pair))
        .map_err(rejected)
}

fn public_from_spki(der: &[u8]) -> Result<PublicMaterial, Error> {
    let spki = der::parse_spki(der)?;
    match spki.algorithm {
        KeyAlgorithm::Rsa => {
            let (n, e) = der::parse_rsa_public(&spki.public_key)?;
            check_rsa_bits(&n)?;
            Ok(PublicMaterial::Rsa { n, e })
        }
        KeyAlgorithm::Ec(curve) => {
            let point = spki.public_key;
            let len = curve.coordinate_len();
            // Only the uncompressed form maps onto JWK x/y; the point must also lie on the curve.
            if point.len() != 1 + 2 * len || point[0] != 0x04 || !on_curve(curve, &point) {
                return Err(Error::malformed(
                    "EC public key",
                    format!("not a valid uncompressed {curve} point"),
                ));
            }
            Ok(PublicMaterial::Ec {
                curve,
                x: point[1..=len].to_vec(),
                y: point[len + 1..].to_vec(),
            })
        }
        KeyAlgorithm::Ed25519 if spki.public_key.len() == 32 => {
            Ok(PublicMaterial::Ed25519 { x: spki.public_key })
        }
        KeyAlgorithm::Ed25519 => Err(Error::malformed("Ed25519 public key", "not 32 bytes")),
    }
}

/// Point validation through ECDH's public-key parser, which checks the curve equation.
pub(super) fn on_curve(curve: Curve, point: &[u8]) -> bool {
    use aws_lc_rs::agreement;
    let algorithm = match curve {
        Curve::P256 => &agreement::ECDH_P256,
        Curve::P384 => &agreement::ECDH_P384,
        Curve::P521 => &agreement::ECDH_P521,
    };
    agreement::ParsedPublicKey::try_from(agreement::UnparsedPublicKey::new(algorithm, point))
        .is_ok()
}

fn check_rsa_bits(n: &[u8]) -> Result<(), Error> {
    let bits = modulus_bits(n);
    if bits < RSA_MIN_BITS {
        return Err(Error::RsaKeyTooSmall(bits));
    }
    if bits > RSA_MAX_BITS {
        return Err(Error::RsaKeyTooLarge(bits));
    }
    Ok(())
}

fn rejected(error: aws_lc_rs::error::KeyRejected) -> Error {
    Error::Rejected(error.to_string())
}
