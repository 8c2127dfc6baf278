//! What a JwksPublication publishes, pure: the JWK Set and discovery document assembled from the
//! selected SigningKeys' public JWKs, and the ConfigMap data that carries them to the server.
//! The controller writes [`Published::to_data`]; `jwks-operator serve` reads
//! [`Published::from_data`]; neither knows the other.

mod assemble;
mod format;

pub use assemble::{Assembled, assemble, smallest_pre_publish};
pub use format::{
    DISCOVERY_KEY, DISCOVERY_PATH, FormatError, JWKS_KEY, JWKS_PATH, MAX_AGE_KEY, Published,
    strong_etag,
};
