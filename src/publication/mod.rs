//! What a JwksPublication publishes, pure: the JWK Set and discovery document assembled from the
//! selected SigningKeys' public JWKs, and the ConfigMap data that carries them to the server.
//! The controller writes [`Published::to_data`]; `jwks-operator serve` reads
//! [`Published::from_data`]; neither knows the other.

mod assemble;
mod format;

pub use assemble::{Assembled, assemble, jwks_path, smallest_pre_publish};
pub use format::{
    DISCOVERY_KEY, DISCOVERY_PATH, ENVOY_JWKS_KEY, FormatError, JWKS_KEY, JWKS_PATH, JWKS_PATH_KEY,
    MAX_AGE_KEY, Published, RESERVED_PATHS, SERVED_KEYS, is_jwks_path, strong_etag,
};
