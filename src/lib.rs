//! jwks-operator: generates JSON Web Keys into Kubernetes Secrets, publishes their public halves
//! as a JWK Set, and rotates them without ever breaking a verifier.

pub mod api;
pub mod controller;
pub mod jose;
pub mod lifecycle;
pub mod publication;
pub mod server;
