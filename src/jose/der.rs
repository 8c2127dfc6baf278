//! The few ASN.1 structures keys travel in: PKCS#8 (RFC 5208), PKCS#1 (RFC 8017 A.1), SEC1
//! (RFC 5915) and SubjectPublicKeyInfo (RFC 5280 §4.1). Parsing only goes as deep as needed to
//! identify the key; the crypto library validates the key itself.

use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, BERReaderSeq, Tag};

use super::{Curve, Error};

const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const RSASSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const ED25519: &[u64] = &[1, 3, 101, 112];

/// Named curves by OID: the supported ones, and names for the rest so errors can say which.
const CURVES: &[(&[u64], &str)] = &[
    (&[1, 2, 840, 10045, 3, 1, 7], "P-256"),
    (&[1, 3, 132, 0, 34], "P-384"),
    (&[1, 3, 132, 0, 35], "P-521"),
    (&[1, 3, 132, 0, 10], "secp256k1"),
    (&[1, 2, 840, 10045, 3, 1, 1], "P-192"),
    (&[1, 3, 132, 0, 33], "P-224"),
    (&[1, 3, 36, 3, 3, 2, 8, 1, 1, 7], "brainpoolP256r1"),
    (&[1, 3, 36, 3, 3, 2, 8, 1, 1, 11], "brainpoolP384r1"),
    (&[1, 3, 36, 3, 3, 2, 8, 1, 1, 13], "brainpoolP512r1"),
];

const KEY_TYPES: &[(&[u64], &str)] = &[
    (&[1, 3, 101, 110], "X25519"),
    (&[1, 3, 101, 111], "X448"),
    (&[1, 3, 101, 113], "Ed448"),
    (&[1, 2, 840, 10040, 4, 1], "DSA"),
    (&[1, 2, 840, 113549, 1, 3, 1], "Diffie-Hellman"),
    (&[1, 2, 840, 10046, 2, 1], "X9.42 Diffie-Hellman"),
    (RSASSA_PSS, "RSA-PSS (restricted)"),
];

/// The algorithm a PKCS#8 or SPKI structure declares for its key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    Ec(Curve),
    Ed25519,
}

/// A PKCS#8 PrivateKeyInfo: the algorithm and the inner, algorithm-specific key bytes.
pub struct Pkcs8 {
    pub algorithm: KeyAlgorithm,
    pub private_key: Vec<u8>,
}

/// A SubjectPublicKeyInfo: the algorithm and the bit string holding the key.
pub struct Spki {
    pub algorithm: KeyAlgorithm,
    pub public_key: Vec<u8>,
}

/// The integers of a PKCS#1 RSAPrivateKey, big-endian without sign octets.
pub struct RsaPrivateParts {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    pub d: Vec<u8>,
    pub p: Vec<u8>,
    pub q: Vec<u8>,
    pub dp: Vec<u8>,
    pub dq: Vec<u8>,
    pub qi: Vec<u8>,
}

pub fn parse_pkcs8(der: &[u8]) -> Result<Pkcs8, Error> {
    let (oid, params, private_key) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let (oid, params) = read_algorithm_identifier(r)?;
            let private_key = r.next().read_bytes()?;
            skip_optional_tail(r)?;
            Ok((oid, params, private_key))
        })
    })
    .map_err(|e| Error::malformed("PKCS#8 private key", e))?;
    Ok(Pkcs8 {
        algorithm: key_algorithm(&oid, params.as_ref())?,
        private_key,
    })
}

pub fn parse_spki(der: &[u8]) -> Result<Spki, Error> {
    let (oid, params, public_key) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let (oid, params) = read_algorithm_identifier(r)?;
            let (bits, _) = r.next().read_bitvec_bytes()?;
            Ok((oid, params, bits))
        })
    })
    .map_err(|e| Error::malformed("public key (SPKI)", e))?;
    Ok(Spki {
        algorithm: key_algorithm(&oid, params.as_ref())?,
        public_key,
    })
}

/// The named curve of a SEC1 ECPrivateKey (its `parameters` field).
pub fn parse_sec1_curve(der: &[u8]) -> Result<Curve, Error> {
    let params = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let _private_key = r.next().read_bytes()?;
            let params = r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
            skip_optional_tail(r)?;
            Ok(params)
        })
    })
    .map_err(|e| Error::malformed("EC private key (SEC1)", e))?;
    let oid = params.ok_or_else(|| Error::malformed("EC private key (SEC1)", "no named curve"))?;
    curve(&oid)
}

pub fn parse_rsa_private(der: &[u8]) -> Result<RsaPrivateParts, Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let parts = RsaPrivateParts {
                n: read_uint(r)?,
                e: read_uint(r)?,
                d: read_uint(r)?,
                p: read_uint(r)?,
                q: read_uint(r)?,
                dp: read_uint(r)?,
                dq: read_uint(r)?,
                qi: read_uint(r)?,
            };
            // Multi-prime keys (otherPrimeInfos) are refused: `oth` is not worth supporting.
            Ok(parts)
        })
    })
    .map_err(|e| Error::malformed("RSA private key (PKCS#1)", e))
}

/// DER PKCS#1 RSAPrivateKey, version 0 (two primes).
pub fn rsa_private_key(parts: &RsaPrivateParts) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            for int in [
                &parts.n, &parts.e, &parts.d, &parts.p, &parts.q, &parts.dp, &parts.dq, &parts.qi,
            ] {
                w.next().write_bigint_bytes(int, true);
            }
        })
    })
}

/// A PKCS#1 RSAPublicKey: modulus and exponent.
pub fn parse_rsa_public(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let n = read_uint(r)?;
            let e = read_uint(r)?;
            Ok((n, e))
        })
    })
    .map_err(|e| Error::malformed("RSA public key (PKCS#1)", e))
}

/// The DER SubjectPublicKeyInfo inside an X.509 certificate (RFC 5280 §4.1).
pub fn certificate_spki(der: &[u8]) -> Result<Vec<u8>, Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let spki = r.next().read_sequence(|tbs| {
                let _version =
                    tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                for _serial_signature_issuer_validity_subject in 0..5 {
                    tbs.next().read_der()?;
                }
                let spki = tbs.next().read_der()?;
                skip_optional_tail(tbs)?;
                Ok(spki)
            })?;
            let _signature_algorithm = r.next().read_der()?;
            let _signature = r.next().read_der()?;
            Ok(spki)
        })
    })
    .map_err(|e| Error::malformed("X.509 certificate", e))
}

/// DER SubjectPublicKeyInfo for an RSA key.
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let rsa_public_key = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(n, true);
            w.next().write_bigint_bytes(e, true);
        })
    });
    spki(RSA_ENCRYPTION, None, &rsa_public_key)
}

/// DER SubjectPublicKeyInfo for an EC key, from its uncompressed point.
pub fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    spki(EC_PUBLIC_KEY, Some(curve_oid(curve)), point)
}

/// DER SubjectPublicKeyInfo for an Ed25519 key (RFC 8410 §4).
pub fn ed25519_spki(public_key: &[u8]) -> Vec<u8> {
    spki(ED25519, None, public_key)
}

fn spki(algorithm: &[u64], curve: Option<&[u64]>, key: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(algorithm));
                // RFC 3279 §2.3.1: rsaEncryption carries NULL parameters; RFC 8410: Ed25519 none.
                match curve {
                    Some(curve) => w.next().write_oid(&ObjectIdentifier::from_slice(curve)),
                    None if algorithm == RSA_ENCRYPTION => w.next().write_null(),
                    None => {}
                }
            });
            w.next().write_bitvec_bytes(key, key.len() * 8);
        })
    })
}

fn read_algorithm_identifier(
    r: &mut BERReaderSeq<'_, '_>,
) -> Result<(ObjectIdentifier, Option<ObjectIdentifier>), ASN1Error> {
    r.next().read_sequence(|r| {
        let oid = r.next().read_oid()?;
        // Parameters: an OID (named curve), NULL (RSA), or absent (Ed25519). Anything else,
        // such as explicit curve parameters or PSS parameters, is kept opaque and refused later.
        let params = r.read_optional(|r| {
            Ok(match r.lookahead_tag()? {
                yasna::tags::TAG_OID => Some(r.read_oid()?),
                _ => {
                    r.read_der()?;
                    None
                }
            })
        })?;
        Ok((oid, params.flatten()))
    })
}

/// An unsigned INTEGER as big-endian bytes without the DER sign octet.
fn read_uint(r: &mut BERReaderSeq<'_, '_>) -> Result<Vec<u8>, ASN1Error> {
    let (mut bytes, non_negative) = r.next().read_bigint_bytes()?;
    if !non_negative {
        return Err(ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
    }
    let leading_zeros = bytes
        .iter()
        .take_while(|&&b| b == 0)
        .count()
        .min(bytes.len() - 1);
    bytes.drain(..leading_zeros);
    Ok(bytes)
}

/// PKCS#8 v2 and SEC1 may end with optional context-tagged fields; none of them matters here.
fn skip_optional_tail(r: &mut BERReaderSeq<'_, '_>) -> Result<(), ASN1Error> {
    while r.read_optional(|r| r.read_der())?.is_some() {}
    Ok(())
}

fn key_algorithm(
    oid: &ObjectIdentifier,
    params: Option<&ObjectIdentifier>,
) -> Result<KeyAlgorithm, Error> {
    let components = oid.components().as_slice();
    if components == RSA_ENCRYPTION {
        Ok(KeyAlgorithm::Rsa)
    } else if components == ED25519 {
        Ok(KeyAlgorithm::Ed25519)
    } else if components == EC_PUBLIC_KEY {
        let params = params
            .ok_or_else(|| Error::UnsupportedCurve("explicit (unnamed) curve parameters".into()))?;
        Ok(KeyAlgorithm::Ec(curve(params)?))
    } else {
        let name = KEY_TYPES
            .iter()
            .find(|(known, _)| *known == components)
            .map_or_else(
                || format!("OID {}", dotted(oid)),
                |(_, name)| (*name).to_owned(),
            );
        Err(Error::UnsupportedKeyType(name))
    }
}

fn curve(oid: &ObjectIdentifier) -> Result<Curve, Error> {
    let components = oid.components().as_slice();
    let name = CURVES
        .iter()
        .find(|(known, _)| *known == components)
        .map_or_else(
            || format!("OID {}", dotted(oid)),
            |(_, name)| (*name).to_owned(),
        );
    name.parse()
}

fn curve_oid(curve: Curve) -> &'static [u64] {
    let index = match curve {
        Curve::P256 => 0,
        Curve::P384 => 1,
        Curve::P521 => 2,
    };
    CURVES[index].0
}

fn dotted(oid: &ObjectIdentifier) -> String {
    oid.components()
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_oids_map_to_their_names() {
        for curve in Curve::ALL {
            let oid = ObjectIdentifier::from_slice(curve_oid(curve));
            assert_eq!(super::curve(&oid).unwrap(), curve);
        }
        let k1 = ObjectIdentifier::from_slice(&[1, 3, 132, 0, 10]);
        assert_eq!(
            super::curve(&k1),
            Err(Error::UnsupportedCurve("secp256k1".into()))
        );
    }

    #[test]
    fn spki_round_trips_through_the_parser() {
        let spki = parse_spki(&ed25519_spki(&[7; 32])).unwrap();
        assert_eq!(spki.algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(spki.public_key, vec![7; 32]);

        let spki = parse_spki(&rsa_spki(&[0xC1; 256], &[1, 0, 1])).unwrap();
        assert_eq!(spki.algorithm, KeyAlgorithm::Rsa);
        let (n, e) = parse_rsa_public(&spki.public_key).unwrap();
        assert_eq!(
            (n.len(), e),
            (256, vec![1, 0, 1]),
            "a high first octet needs a sign octet in DER, not in the result"
        );
    }

    #[test]
    fn rsa_private_key_round_trips_through_the_parser() {
        let int = |first: u8| vec![first, 1, 2];
        let parts = RsaPrivateParts {
            n: int(0xC1),
            e: vec![1, 0, 1],
            d: int(3),
            p: int(0x84),
            q: int(5),
            dp: int(6),
            dq: int(0xF7),
            qi: int(8),
        };
        let parsed = parse_rsa_private(&rsa_private_key(&parts)).unwrap();
        let all = |p: &RsaPrivateParts| {
            [&p.n, &p.e, &p.d, &p.p, &p.q, &p.dp, &p.dq, &p.qi].map(Vec::clone)
        };
        assert_eq!(all(&parsed), all(&parts));
    }
}
