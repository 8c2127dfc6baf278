//! Key pairs: generation, PEM export, and the public half as plain data.

use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use super::{Algorithm, Curve, Error, KeyKind, KeySpec, der};

/// A private key bound to the one algorithm it is used with (RFC 8725 §3.1).
pub struct PrivateKey {
    algorithm: Algorithm,
    material: PrivateMaterial,
}

/// Private key material, not yet bound to an algorithm (as read from a PEM).
pub enum PrivateMaterial {
    Rsa(RsaKeyPair),
    Ec(Curve, EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A public key bound to its algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    pub material: PublicMaterial,
}

/// Public key material as the JWK members carry it: big-endian integers without leading zero
/// octets for RSA, fixed-length coordinates for EC, the raw key for Ed25519.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

impl PrivateKey {
    /// Generates a fresh key for `spec` from the operating system's CSPRNG.
    pub fn generate(spec: KeySpec) -> Result<Self, Error> {
        let material = match spec.kind {
            KeyKind::Rsa { bits } => {
                let size = match bits {
                    2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                    other => return Err(Error::UnsupportedKeySize(other)),
                };
                PrivateMaterial::Rsa(
                    RsaKeyPair::generate(size).map_err(|_| Error::GenerationFailed)?,
                )
            }
            KeyKind::Ec(curve) => PrivateMaterial::Ec(
                curve,
                EcdsaKeyPair::generate(ecdsa_algorithm(curve))
                    .map_err(|_| Error::GenerationFailed)?,
            ),
            KeyKind::Ed25519 => PrivateMaterial::Ed25519(
                Ed25519KeyPair::generate().map_err(|_| Error::GenerationFailed)?,
            ),
        };
        PrivateKey::new(spec.algorithm, material)
    }

    /// Binds material to an algorithm, refusing a key the algorithm cannot use.
    pub fn new(algorithm: Algorithm, material: PrivateMaterial) -> Result<Self, Error> {
        let kind = material.kind();
        if !algorithm.accepts(kind) {
            return Err(Error::AlgorithmMismatch { algorithm, kind });
        }
        Ok(PrivateKey {
            algorithm,
            material,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn material(&self) -> &PrivateMaterial {
        &self.material
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            algorithm: self.algorithm,
            material: self.material.public(),
        }
    }

    /// PKCS#8 DER; Ed25519 as PKCS#8 v1, which OpenSSL 3 reads (v2 it does not).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, Error> {
        let der = match &self.material {
            PrivateMaterial::Rsa(pair) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(pair)
                .map(|der| der.as_ref().to_vec()),
            PrivateMaterial::Ec(_, pair) => pair.to_pkcs8v1().map(|doc| doc.as_ref().to_vec()),
            PrivateMaterial::Ed25519(pair) => pair.to_pkcs8v1().map(|doc| doc.as_ref().to_vec()),
        };
        der.map_err(|_| Error::Rejected("cannot encode the key as PKCS#8".into()))
    }

    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        Ok(pem_encode("PRIVATE KEY", self.to_pkcs8_der()?))
    }

    /// The private JWK members, as big-endian bytes (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
    pub fn private_members(&self) -> Result<PrivateMembers, Error> {
        let unavailable = |_| Error::Rejected("cannot export the private key".into());
        match &self.material {
            PrivateMaterial::Rsa(_) => {
                let pkcs8 = der::parse_pkcs8(&self.to_pkcs8_der()?)?;
                let parts = der::parse_rsa_private(&pkcs8.private_key)?;
                Ok(PrivateMembers::Rsa {
                    d: parts.d,
                    p: parts.p,
                    q: parts.q,
                    dp: parts.dp,
                    dq: parts.dq,
                    qi: parts.qi,
                })
            }
            PrivateMaterial::Ec(_, pair) => {
                // EcPrivateKeyBin is already the fixed length of RFC 7518 §6.2.2.1.
                let d = AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin>::as_be_bytes(
                    &pair.private_key(),
                )
                .map_err(unavailable)?;
                Ok(PrivateMembers::Single {
                    d: d.as_ref().to_vec(),
                })
            }
            PrivateMaterial::Ed25519(pair) => {
                let seed = pair.seed().map_err(unavailable)?;
                let d = AsBigEndian::<aws_lc_rs::encoding::Curve25519SeedBin>::as_be_bytes(&seed)
                    .map_err(unavailable)?;
                Ok(PrivateMembers::Single {
                    d: d.as_ref().to_vec(),
                })
            }
        }
    }

    /// A JWS signature over `message` (RFC 7518 §3): PKCS#1 v1.5 or PSS for RSA, raw R‖S for
    /// ECDSA, pure Ed25519.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = |_| Error::Rejected("signing failed".into());
        match &self.material {
            PrivateMaterial::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_SHA384,
                    Algorithm::Ps512 => &signature::RSA_PSS_SHA512,
                    other => return Err(Error::CannotSign(other)),
                };
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &SystemRandom::new(), message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
            PrivateMaterial::Ec(_, pair) if !self.algorithm.takes_curve() => Ok(pair
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            PrivateMaterial::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            PrivateMaterial::Ec(..) => Err(Error::CannotSign(self.algorithm)),
        }
    }
}

/// The private members of a JWK; `Single` is EC and OKP `d`.
pub enum PrivateMembers {
    Rsa {
        d: Vec<u8>,
        p: Vec<u8>,
        q: Vec<u8>,
        dp: Vec<u8>,
        dq: Vec<u8>,
        qi: Vec<u8>,
    },
    Single {
        d: Vec<u8>,
    },
}

impl PrivateMaterial {
    pub fn kind(&self) -> KeyKind {
        match self {
            PrivateMaterial::Rsa(pair) => KeyKind::Rsa {
                bits: modulus_bits(
                    pair.public_key()
                        .modulus()
                        .big_endian_without_leading_zero(),
                ),
            },
            PrivateMaterial::Ec(curve, _) => KeyKind::Ec(*curve),
            PrivateMaterial::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    pub fn public(&self) -> PublicMaterial {
        match self {
            PrivateMaterial::Rsa(pair) => {
                let public = pair.public_key();
                PublicMaterial::Rsa {
                    n: public.modulus().big_endian_without_leading_zero().to_vec(),
                    e: public.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            PrivateMaterial::Ec(curve, pair) => {
                // Uncompressed SEC1 point: 0x04 ‖ X ‖ Y, each coordinate full length.
                let point = pair.public_key().as_ref();
                let len = curve.coordinate_len();
                PublicMaterial::Ec {
                    curve: *curve,
                    x: point[1..=len].to_vec(),
                    y: point[len + 1..].to_vec(),
                }
            }
            PrivateMaterial::Ed25519(pair) => PublicMaterial::Ed25519 {
                x: pair.public_key().as_ref().to_vec(),
            },
        }
    }
}

impl PublicKey {
    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) PEM.
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", self.material.to_spki_der())
    }

    /// Verifies a JWS signature made by [`PrivateKey::sign`] or any conforming signer.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &'static dyn signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::Es512 => &signature::ECDSA_P521_SHA512_FIXED,
            Algorithm::EdDsa => &signature::ED25519,
            _ => return false,
        };
        let key_bytes = match &self.material {
            PublicMaterial::Rsa { .. } => self.material.to_spki_der(),
            PublicMaterial::Ec { x, y, .. } => [&[0x04][..], x, y].concat(),
            PublicMaterial::Ed25519 { x } => x.clone(),
        };
        signature::UnparsedPublicKey::new(algorithm, key_bytes)
            .verify(message, signature)
            .is_ok()
    }
}

impl PublicMaterial {
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicMaterial::Rsa { n, .. } => KeyKind::Rsa {
                bits: modulus_bits(n),
            },
            PublicMaterial::Ec { curve, .. } => KeyKind::Ec(*curve),
            PublicMaterial::Ed25519 { .. } => KeyKind::Ed25519,
        }
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        match self {
            PublicMaterial::Rsa { n, e } => der::rsa_spki(n, e),
            PublicMaterial::Ec { curve, x, y } => {
                der::ec_spki(*curve, &[&[0x04][..], x, y].concat())
            }
            PublicMaterial::Ed25519 { x } => der::ed25519_spki(x),
        }
    }
}

pub(super) fn ecdsa_algorithm(curve: Curve) -> &'static signature::EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

/// Bit length of a big-endian integer without leading zero octets.
pub(super) fn modulus_bits(n: &[u8]) -> u32 {
    let Some(first) = n.first() else { return 0 };
    let whole = u32::try_from(n.len().saturating_sub(1)).unwrap_or(u32::MAX / 8);
    whole * 8 + (8 - first.leading_zeros())
}

fn pem_encode(tag: &str, der: Vec<u8>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_counts_from_the_highest_set_bit() {
        assert_eq!(modulus_bits(&[0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01, 0, 0]), 17);
        assert_eq!(modulus_bits(&[]), 0);
    }

    #[test]
    fn encryption_keys_refuse_to_sign() {
        let key =
            PrivateKey::generate(KeySpec::new(Algorithm::EcdhEs, None, None).unwrap()).unwrap();
        assert_eq!(key.sign(b"x"), Err(Error::CannotSign(Algorithm::EcdhEs)));
    }

    #[test]
    fn binding_a_key_to_an_incompatible_algorithm_is_refused() {
        let key =
            PrivateKey::generate(KeySpec::new(Algorithm::Es256, None, None).unwrap()).unwrap();
        let PrivateMaterial::Ec(curve, _) = key.material() else {
            panic!("not EC")
        };
        assert_eq!(*curve, Curve::P256);
        let material = PrivateMaterial::Ec(
            Curve::P256,
            EcdsaKeyPair::generate(ecdsa_algorithm(Curve::P256)).unwrap(),
        );
        assert!(matches!(
            PrivateKey::new(Algorithm::Es384, material),
            Err(Error::AlgorithmMismatch {
                algorithm: Algorithm::Es384,
                ..
            })
        ));
    }
}
