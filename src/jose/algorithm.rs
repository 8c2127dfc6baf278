//! JOSE algorithms and the key shapes they need (RFC 7518 §3.1, §4.1; RFC 8037 §3.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Error;

/// A JWS or JWE key-management algorithm this crate can generate keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    RsaOaep,
    RsaOaep256,
    EcdhEs,
    EcdhEsA128kw,
    EcdhEsA256kw,
}

/// The JWK `use` member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyUse {
    #[serde(rename = "sig")]
    Sig,
    #[serde(rename = "enc")]
    Enc,
}

/// A NIST curve usable in a JWK (RFC 7518 §6.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Curve {
    P256,
    P384,
    P521,
}

/// The shape of key material: what must be generated or imported for an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa { bits: u32 },
    Ec(Curve),
    Ed25519,
}

/// RSA modulus sizes the operator generates.
pub const RSA_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];
/// Smallest RSA key accepted anywhere (RFC 7518 §3.3, §4.2).
pub const RSA_MIN_BITS: u32 = 2048;
/// Largest RSA key accepted on import (aws-lc's limit).
pub const RSA_MAX_BITS: u32 = 8192;

impl Algorithm {
    pub const ALL: [Algorithm; 15] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Es512,
        Algorithm::EdDsa,
        Algorithm::RsaOaep,
        Algorithm::RsaOaep256,
        Algorithm::EcdhEs,
        Algorithm::EcdhEsA128kw,
        Algorithm::EcdhEsA256kw,
    ];

    /// The registered `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
            // RFC 9864 deprecates "EdDSA" for "Ed25519", but verifiers lag: PyJWT drops a JWK
            // whose alg is "Ed25519" and go-jose rejects the name, so publish the name every
            // verifier knows.
            Algorithm::EdDsa => "EdDSA",
            Algorithm::RsaOaep => "RSA-OAEP",
            Algorithm::RsaOaep256 => "RSA-OAEP-256",
            Algorithm::EcdhEs => "ECDH-ES",
            Algorithm::EcdhEsA128kw => "ECDH-ES+A128KW",
            Algorithm::EcdhEsA256kw => "ECDH-ES+A256KW",
        }
    }

    pub fn key_use(self) -> KeyUse {
        match self {
            Algorithm::RsaOaep
            | Algorithm::RsaOaep256
            | Algorithm::EcdhEs
            | Algorithm::EcdhEsA128kw
            | Algorithm::EcdhEsA256kw => KeyUse::Enc,
            _ => KeyUse::Sig,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::Rs256
                | Algorithm::Rs384
                | Algorithm::Rs512
                | Algorithm::Ps256
                | Algorithm::Ps384
                | Algorithm::Ps512
                | Algorithm::RsaOaep
                | Algorithm::RsaOaep256
        )
    }

    /// ECDH-ES key agreement works on any NIST curve, so the curve is a free choice.
    pub fn takes_curve(self) -> bool {
        matches!(
            self,
            Algorithm::EcdhEs | Algorithm::EcdhEsA128kw | Algorithm::EcdhEsA256kw
        )
    }

    /// ES256/384/512 fix their curve (RFC 7518 §3.4).
    fn fixed_curve(self) -> Option<Curve> {
        match self {
            Algorithm::Es256 => Some(Curve::P256),
            Algorithm::Es384 => Some(Curve::P384),
            Algorithm::Es512 => Some(Curve::P521),
            _ => None,
        }
    }

    /// Whether a key of this shape may be used with this algorithm.
    pub fn accepts(self, kind: KeyKind) -> bool {
        match kind {
            KeyKind::Rsa { bits } => self.is_rsa() && (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits),
            KeyKind::Ec(curve) => self.takes_curve() || self.fixed_curve() == Some(curve),
            KeyKind::Ed25519 => self == Algorithm::EdDsa,
        }
    }

    /// The signing algorithm a bare key gets when none is named: the one its shape implies.
    pub fn default_for(kind: KeyKind) -> Algorithm {
        match kind {
            KeyKind::Rsa { .. } => Algorithm::Rs256,
            KeyKind::Ec(Curve::P256) => Algorithm::Es256,
            KeyKind::Ec(Curve::P384) => Algorithm::Es384,
            KeyKind::Ec(Curve::P521) => Algorithm::Es512,
            KeyKind::Ed25519 => Algorithm::EdDsa,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.name() == s)
            .ok_or_else(|| Error::UnknownAlgorithm(s.to_owned()))
    }
}

impl KeyUse {
    pub fn name(self) -> &'static str {
        match self {
            KeyUse::Sig => "sig",
            KeyUse::Enc => "enc",
        }
    }
}

impl Curve {
    pub const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    /// The JWK `crv` value.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// RFC 7518 §6.2.1.2: coordinates are always the full size of the curve.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Curve {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Curve::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| Error::UnsupportedCurve(s.to_owned()))
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::Ec(curve) => write!(f, "EC {curve}"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// What to generate: an algorithm and the exact key shape it will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeySpec {
    pub algorithm: Algorithm,
    pub kind: KeyKind,
}

impl KeySpec {
    /// Resolves the optional `keySize` and `curve` parameters against the algorithm, refusing
    /// parameters the algorithm does not take rather than ignoring them.
    pub fn new(
        algorithm: Algorithm,
        key_size: Option<u32>,
        curve: Option<Curve>,
    ) -> Result<Self, Error> {
        if key_size.is_some() && !algorithm.is_rsa() {
            return Err(Error::KeySizeNotApplicable(algorithm));
        }
        if curve.is_some() && !algorithm.takes_curve() {
            return Err(Error::CurveNotApplicable(algorithm));
        }
        let kind = if algorithm.is_rsa() {
            let bits = key_size.unwrap_or(RSA_MIN_BITS);
            if !RSA_KEY_SIZES.contains(&bits) {
                return Err(Error::UnsupportedKeySize(bits));
            }
            KeyKind::Rsa { bits }
        } else if let Some(curve) = algorithm.fixed_curve() {
            KeyKind::Ec(curve)
        } else if algorithm.takes_curve() {
            KeyKind::Ec(curve.unwrap_or(Curve::P256))
        } else {
            KeyKind::Ed25519
        };
        Ok(KeySpec { algorithm, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.name().parse::<Algorithm>().unwrap(), alg);
        }
        assert!("HS256".parse::<Algorithm>().is_err());
        assert!(
            "es256".parse::<Algorithm>().is_err(),
            "alg names are case-sensitive"
        );
    }

    #[test]
    fn every_algorithm_accepts_the_shape_its_spec_resolves_to() {
        for alg in Algorithm::ALL {
            let spec = KeySpec::new(alg, None, None).unwrap();
            assert!(alg.accepts(spec.kind), "{alg} refuses {}", spec.kind);
        }
    }

    #[test]
    fn key_spec_refuses_parameters_the_algorithm_does_not_take() {
        assert!(matches!(
            KeySpec::new(Algorithm::Es256, Some(2048), None),
            Err(Error::KeySizeNotApplicable(_))
        ));
        assert!(matches!(
            KeySpec::new(Algorithm::Es256, None, Some(Curve::P384)),
            Err(Error::CurveNotApplicable(_))
        ));
        assert!(matches!(
            KeySpec::new(Algorithm::Rs256, Some(1024), None),
            Err(Error::UnsupportedKeySize(1024))
        ));
        assert_eq!(
            KeySpec::new(Algorithm::EcdhEsA256kw, None, Some(Curve::P521))
                .unwrap()
                .kind,
            KeyKind::Ec(Curve::P521)
        );
        assert_eq!(
            KeySpec::new(Algorithm::Ps384, Some(4096), None)
                .unwrap()
                .kind,
            KeyKind::Rsa { bits: 4096 }
        );
    }

    #[test]
    fn signing_algorithms_use_sig_and_encryption_algorithms_use_enc() {
        let enc: Vec<_> = Algorithm::ALL
            .into_iter()
            .filter(|a| a.key_use() == KeyUse::Enc)
            .collect();
        assert_eq!(enc.len(), 5);
        assert!(
            enc.iter()
                .all(|a| a.name().starts_with("RSA-OAEP") || a.name().starts_with("ECDH-ES"))
        );
    }
}
