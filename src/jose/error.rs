use super::{Algorithm, KeyKind};

/// Everything that can go wrong generating, importing or encoding a key. Each message is one
/// line that names the problem; none ever contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "unknown algorithm {0:?}; expected one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA RSA-OAEP RSA-OAEP-256 ECDH-ES ECDH-ES+A128KW ECDH-ES+A256KW"
    )]
    UnknownAlgorithm(String),
    #[error("unsupported curve {0}; supported curves are P-256, P-384, P-521 and Ed25519")]
    UnsupportedCurve(String),
    #[error("unsupported RSA key size {0}; use 2048, 3072 or 4096")]
    UnsupportedKeySize(u32),
    #[error("a key size applies to RSA algorithms only, not {0}")]
    KeySizeNotApplicable(Algorithm),
    #[error(
        "a curve applies to ECDH-ES algorithms only, not {0} (its curve is fixed by the algorithm)"
    )]
    CurveNotApplicable(Algorithm),
    #[error("RSA key is {0} bits; at least 2048 bits are required")]
    RsaKeyTooSmall(u32),
    #[error("RSA key is {0} bits; at most 8192 bits are supported")]
    RsaKeyTooLarge(u32),
    #[error("a {kind} key cannot be used with {algorithm}")]
    AlgorithmMismatch { algorithm: Algorithm, kind: KeyKind },
    #[error("{0} keys are not supported; use RSA, EC (P-256, P-384, P-521) or Ed25519")]
    UnsupportedKeyType(String),
    #[error("the input is empty")]
    Empty,
    #[error("the input is not PEM: no -----BEGIN ...----- block found")]
    NotPem,
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    #[error("the PEM is encrypted; decrypt it first (e.g. `openssl pkey -in FILE -out plain.pem`)")]
    EncryptedPem,
    #[error("found a certificate where a key was expected; give the private key PEM instead")]
    CertificateNotKey,
    #[error("found {0} keys in one PEM; give exactly one key")]
    SeveralKeys(usize),
    #[error(
        "unsupported PEM block {0:?}; expected PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY"
    )]
    UnsupportedPemBlock(String),
    #[error("expected a private key but found a public key")]
    PublicKeyNotPrivate,
    #[error("malformed {what}: {reason}")]
    MalformedKey { what: &'static str, reason: String },
    #[error("the key was rejected by the crypto library: {0}")]
    Rejected(String),
    #[error("key generation failed in the crypto library")]
    GenerationFailed,
    #[error("malformed JWK: {0}")]
    MalformedJwk(String),
    #[error("{0} keys cannot sign")]
    CannotSign(Algorithm),
    #[error("certificate generation failed: {0}")]
    Certificate(String),
}

impl Error {
    pub(super) fn malformed(what: &'static str, reason: impl ToString) -> Self {
        Error::MalformedKey {
            what,
            reason: reason.to_string(),
        }
    }
}
