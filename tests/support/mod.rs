//! Shared support for integration tests that need a real control plane.
//!
//! Each test binary (`mod support;`) gets one control plane (etcd, kube-apiserver,
//! kube-controller-manager; see `hack/control-plane/start.sh` and docs/control-plane.md), started
//! on first use and shared by all of its tests. The launcher watches this process and tears the
//! control plane down when the process exits, however it exits. Each test works in a namespace
//! of its own ([`test_namespace`]) with a client of its own: a `kube::Client` is bound to the
//! tokio runtime it was made on, and every `#[tokio::test]` has its own runtime.
//!
//! One module a concern: [`cluster`] (the control plane), [`namespace`] (clients, namespaces,
//! CRDs), [`objects`] (SigningKey and JwksPublication builders), [`waits`], [`processes`] (the
//! operator and other children), [`tools`] (kubectl, helm), [`readme`] (its YAML blocks), [`kubelet`], [`http`]; all
//! re-exported here.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cluster;
pub mod http;
pub mod interop;
pub mod kubelet;
pub mod namespace;
pub mod objects;
pub mod processes;
pub mod readme;
pub mod tools;
pub mod waits;

use std::path::Path;
use std::time::Duration;

/// A generous default for waits on the control plane: a 2-core machine under a parallel test
/// run is slow, and a wait that passes returns as soon as its condition holds.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Field manager for everything the tests apply.
pub const FIELD_MANAGER: &str = "jwks-operator-tests";

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// Each binary uses some of these; the rest would be unused imports.
#[allow(unused_imports)]
pub use self::{
    cluster::*, http::*, kubelet::*, namespace::*, objects::*, processes::*, readme::*, tools::*,
    waits::*,
};
