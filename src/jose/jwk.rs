//! JSON Web Keys (RFC 7517) and their RFC 7638 thumbprints.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};

use super::der::{self, RsaPrivateParts};
use super::import::on_curve;
use super::key::ecdsa_algorithm;
use super::{
    Algorithm, Curve, Error, PrivateKey, PrivateMaterial, PrivateMembers, PublicKey,
    PublicMaterial, b64,
};

/// A public JWK as published. Members are declared in lexicographic order, the order canonical
/// JSON (RFC 8785) uses, so serialising this struct is already canonical.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Jwk {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(rename = "use")]
    pub key_use: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A private JWK: the public members plus the private ones (RFC 7518 §6.2.2, §6.3.2).
/// Members are again in lexicographic order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateJwk {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    pub d: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<String>,
    #[serde(rename = "use")]
    pub key_use: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

// Never print private members, not even in debug output (G3).
impl std::fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateJwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The RFC 7638 SHA-256 thumbprint: base64url of the hash of the required members in
/// lexicographic order, without whitespace.
pub fn thumbprint(material: &PublicMaterial) -> String {
    let input = match material {
        PublicMaterial::Rsa { n, e } => {
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode_uint(e),
                b64::encode_uint(n)
            )
        }
        PublicMaterial::Ec { curve, x, y } => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            curve.name(),
            b64::encode(x),
            b64::encode(y)
        ),
        PublicMaterial::Ed25519 { x } => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64::encode(x)
        ),
    };
    b64::encode(digest::digest(&digest::SHA256, input.as_bytes()).as_ref())
}

impl PublicKey {
    /// The public JWK: `kid` is the thumbprint; `kty`, `alg` and `use` are always present.
    pub fn to_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            alg: self.algorithm.name().to_owned(),
            crv: None,
            e: None,
            kid: thumbprint(&self.material),
            kty: String::new(),
            n: None,
            key_use: self.algorithm.key_use().name().to_owned(),
            x: None,
            x5c: None,
            x5t_s256: None,
            y: None,
        };
        match &self.material {
            PublicMaterial::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                jwk.n = Some(b64::encode_uint(n));
                jwk.e = Some(b64::encode_uint(e));
            }
            PublicMaterial::Ec { curve, x, y } => {
                jwk.kty = "EC".into();
                jwk.crv = Some(curve.name().into());
                jwk.x = Some(b64::encode(x));
                jwk.y = Some(b64::encode(y));
            }
            PublicMaterial::Ed25519 { x } => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = Some(b64::encode(x));
            }
        }
        jwk
    }
}

impl PrivateKey {
    pub fn to_private_jwk(&self) -> Result<PrivateJwk, Error> {
        let public = self.public_key().to_jwk();
        let mut jwk = PrivateJwk {
            alg: public.alg,
            crv: public.crv,
            d: String::new(),
            dp: None,
            dq: None,
            e: public.e,
            kid: public.kid,
            kty: public.kty,
            n: public.n,
            p: None,
            q: None,
            qi: None,
            key_use: public.key_use,
            x: public.x,
            x5c: public.x5c,
            x5t_s256: public.x5t_s256,
            y: public.y,
        };
        match self.private_members()? {
            PrivateMembers::Rsa {
                d,
                p,
                q,
                dp,
                dq,
                qi,
            } => {
                jwk.d = b64::encode_uint(&d);
                jwk.p = Some(b64::encode_uint(&p));
                jwk.q = Some(b64::encode_uint(&q));
                jwk.dp = Some(b64::encode_uint(&dp));
                jwk.dq = Some(b64::encode_uint(&dq));
                jwk.qi = Some(b64::encode_uint(&qi));
            }
            PrivateMembers::Single { d } => jwk.d = b64::encode(&d),
        }
        Ok(jwk)
    }
}

impl Jwk {
    /// Attaches a DER certificate for this key as `x5c` (standard base64) and `x5t#S256`.
    pub fn with_certificate(mut self, der: &[u8]) -> Jwk {
        (self.x5c, self.x5t_s256) = certificate_members(der);
        self
    }

    /// Parses the key this JWK describes, checking every rule a strict verifier applies: a known
    /// `alg` that fits the key, canonical base64url, minimal integers, full-length coordinates,
    /// a point on the curve.
    pub fn to_public_key(&self) -> Result<PublicKey, Error> {
        let algorithm: Algorithm = self.alg.parse()?;
        let material = public_material(&self.kty, self.crv.as_deref(), |name| match name {
            "n" => self.n.as_deref(),
            "e" => self.e.as_deref(),
            "x" => self.x.as_deref(),
            "y" => self.y.as_deref(),
            _ => None,
        })?;
        let kind = material.kind();
        if !algorithm.accepts(kind) {
            return Err(Error::AlgorithmMismatch { algorithm, kind });
        }
        if self.key_use != algorithm.key_use().name() {
            return Err(Error::MalformedJwk(format!(
                "\"use\" is {:?}, but {algorithm} keys are {:?}",
                self.key_use,
                algorithm.key_use().name()
            )));
        }
        // A verifier that honours x5c trusts the certificate's key: it must be this key.
        if let Some(problem) =
            certificate_problem(self.x5c.as_deref(), self.x5t_s256.as_deref(), &material)
        {
            return Err(Error::MalformedJwk(problem.reason.into()));
        }
        Ok(PublicKey {
            algorithm,
            material,
        })
    }
}

impl PrivateJwk {
    /// Attaches a DER certificate for this key, as [`Jwk::with_certificate`] does.
    pub fn with_certificate(mut self, der: &[u8]) -> PrivateJwk {
        (self.x5c, self.x5t_s256) = certificate_members(der);
        self
    }

    /// The public JWK: every member but the private ones, unchanged.
    pub fn to_public_jwk(&self) -> Jwk {
        Jwk {
            alg: self.alg.clone(),
            crv: self.crv.clone(),
            e: self.e.clone(),
            kid: self.kid.clone(),
            kty: self.kty.clone(),
            n: self.n.clone(),
            key_use: self.key_use.clone(),
            x: self.x.clone(),
            x5c: self.x5c.clone(),
            x5t_s256: self.x5t_s256.clone(),
            y: self.y.clone(),
        }
    }

    /// Parses the key pair with every check of [`Jwk::to_public_key`], plus canonical private
    /// members that belong to the public ones. The `kid` is left for the caller to compare.
    pub fn to_private_key(&self) -> Result<PrivateKey, Error> {
        let public = self.to_public_jwk().to_public_key()?;
        let mismatch =
            |_| Error::MalformedJwk("the private members do not match the public key".into());
        let material = match public.material {
            PublicMaterial::Rsa { n, e } => {
                let parts = RsaPrivateParts {
                    n,
                    e,
                    d: decode_uint("d", Some(&self.d))?,
                    p: decode_uint("p", self.p.as_deref())?,
                    q: decode_uint("q", self.q.as_deref())?,
                    dp: decode_uint("dp", self.dp.as_deref())?,
                    dq: decode_uint("dq", self.dq.as_deref())?,
                    qi: decode_uint("qi", self.qi.as_deref())?,
                };
                // Parsing runs RSA_check_key: p·q = n, d·e ≡ 1 mod p−1 and q−1, dp, dq and qi.
                let pair = RsaKeyPair::from_der(&der::rsa_private_key(&parts)).map_err(mismatch)?;
                PrivateMaterial::Rsa(pair)
            }
            PublicMaterial::Ec { curve, x, y } => {
                // RFC 7518 §6.2.2.1: d is exactly as long as the curve's order.
                let d = decode_fixed("d", &self.d, curve.coordinate_len())?;
                let point = [&[0x04][..], &x, &y].concat();
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    ecdsa_algorithm(curve),
                    &d,
                    &point,
                )
                .map_err(mismatch)?;
                PrivateMaterial::Ec(curve, pair)
            }
            PublicMaterial::Ed25519 { x } => {
                // RFC 8037 §2: d is the 32-byte seed.
                let d = decode_fixed("d", &self.d, 32)?;
                PrivateMaterial::Ed25519(
                    Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(mismatch)?,
                )
            }
        };
        PrivateKey::new(public.algorithm, material)
    }
}

/// `x5c` (standard base64, RFC 7517 §4.7) and `x5t#S256` for one DER certificate.
fn certificate_members(der: &[u8]) -> (Option<Vec<String>>, Option<String>) {
    (
        Some(vec![b64::encode_standard(der)]),
        Some(b64::encode(digest::digest(&digest::SHA256, der).as_ref())),
    )
}

/// Why `x5c`/`x5t#S256` do not belong to the key `material`, if they do not.
pub(super) struct CertificateProblem {
    /// The member at fault, as a JSON pointer suffix (`x5c`, `x5c/0`, `x5t#S256`).
    pub member: &'static str,
    pub reason: &'static str,
}

/// Checks that `x5c[0]` is a certificate of `material` and that `x5t#S256` is its SHA-256
/// (RFC 7517 §4.7, §4.9). Shared by [`Jwk::to_public_key`] and the lint.
pub(super) fn certificate_problem(
    x5c: Option<&[String]>,
    x5t_s256: Option<&str>,
    material: &PublicMaterial,
) -> Option<CertificateProblem> {
    let problem = |member, reason| Some(CertificateProblem { member, reason });
    let Some(chain) = x5c else {
        return match x5t_s256 {
            Some(_) => problem("x5t#S256", "x5t#S256 without x5c"),
            None => None,
        };
    };
    let Some(first) = chain.first() else {
        return problem("x5c", "x5c must be a non-empty array of strings");
    };
    let Some(der) = b64::decode_standard(first) else {
        return problem("x5c/0", "not standard (padded) base64 (RFC 7517 §4.7)");
    };
    match der::certificate_spki(&der) {
        Ok(spki) if spki == material.to_spki_der() => {}
        Ok(_) => {
            return problem(
                "x5c/0",
                "the certificate's public key differs from the JWK's",
            );
        }
        Err(_) => return problem("x5c/0", "x5c[0] is not a DER X.509 certificate"),
    }
    match x5t_s256 {
        Some(x5t) if x5t != b64::encode(digest::digest(&digest::SHA256, &der).as_ref()) => {
            problem("x5t#S256", "does not match the SHA-256 of x5c[0]")
        }
        _ => None,
    }
}

/// Decodes the key members of a JWK of type `kty` (used by [`Jwk::to_public_key`] and the lint).
pub fn public_material<'a>(
    kty: &str,
    crv: Option<&str>,
    member: impl Fn(&str) -> Option<&'a str>,
) -> Result<PublicMaterial, Error> {
    let bytes = |name: &str| decode(name, member(name));
    let uint = |name: &str| decode_uint(name, member(name));
    match kty {
        "RSA" => Ok(PublicMaterial::Rsa {
            n: uint("n")?,
            e: uint("e")?,
        }),
        "EC" => {
            let curve: Curve = crv
                .ok_or_else(|| Error::MalformedJwk("missing \"crv\"".into()))?
                .parse()?;
            let (x, y) = (bytes("x")?, bytes("y")?);
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(Error::MalformedJwk(format!(
                    "{curve} coordinates must be {len} bytes each"
                )));
            }
            if !on_curve(curve, &[&[0x04][..], &x, &y].concat()) {
                return Err(Error::MalformedJwk(format!("the point is not on {curve}")));
            }
            Ok(PublicMaterial::Ec { curve, x, y })
        }
        "OKP" => match crv {
            Some("Ed25519") => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(Error::MalformedJwk("Ed25519 \"x\" must be 32 bytes".into()));
                }
                Ok(PublicMaterial::Ed25519 { x })
            }
            Some(other) => Err(Error::UnsupportedCurve(other.to_owned())),
            None => Err(Error::MalformedJwk("missing \"crv\"".into())),
        },
        other => Err(Error::UnsupportedKeyType(format!("kty {other:?}"))),
    }
}

/// A present member in canonical unpadded base64url (RFC 7515 §2).
fn decode(name: &str, text: Option<&str>) -> Result<Vec<u8>, Error> {
    let text = text.ok_or_else(|| Error::MalformedJwk(format!("missing \"{name}\"")))?;
    b64::decode(text)
        .ok_or_else(|| Error::MalformedJwk(format!("\"{name}\" is not unpadded base64url")))
}

/// RFC 7518 §2: a Base64urlUInt is the integer in the minimum number of octets.
fn decode_uint(name: &str, text: Option<&str>) -> Result<Vec<u8>, Error> {
    let value = decode(name, text)?;
    if value.is_empty() || (value.len() > 1 && value[0] == 0) {
        return Err(Error::MalformedJwk(format!(
            "\"{name}\" is not a minimal Base64urlUInt"
        )));
    }
    Ok(value)
}

fn decode_fixed(name: &str, text: &str, len: usize) -> Result<Vec<u8>, Error> {
    let value = decode(name, Some(text))?;
    if value.len() != len {
        return Err(Error::MalformedJwk(format!(
            "\"{name}\" must be {len} bytes"
        )));
    }
    Ok(value)
}

/// Thumbprint of any JWK document (public or private), from its required members only.
pub fn thumbprint_of_json(value: &serde_json::Value) -> Result<String, Error> {
    let object = value
        .as_object()
        .ok_or_else(|| Error::MalformedJwk("not a JSON object".into()))?;
    let text = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
    let kty = text("kty").ok_or_else(|| Error::MalformedJwk("missing \"kty\"".into()))?;
    Ok(thumbprint(&public_material(kty, text("crv"), text)?))
}
