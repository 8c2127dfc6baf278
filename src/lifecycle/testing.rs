//! Test fixtures for the planner: a clock in whole seconds, a policy, a counting key mint.

use std::collections::BTreeSet;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{KeyRing, KeySource, Minted, Policy, PublicationFacts, RotationInput, RotationPlan};
use crate::jose::{Algorithm, KeySpec};

/// The instant `secs` seconds into the test timeline.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

pub fn spec(algorithm: Algorithm) -> KeySpec {
    KeySpec::new(algorithm, None, None).unwrap()
}

/// interval 100 s, prePublish 10 s, grace 30 s, ES256.
pub fn policy() -> Policy {
    Policy {
        key_spec: spec(Algorithm::Es256),
        interval: Some(secs(100)),
        pre_publish: secs(10),
        grace_period: secs(30),
        explicit_shape: false,
        import: false,
    }
}

/// Mints kids `k1`, `k2`, … and records where each came from.
#[derive(Default)]
pub struct Mint {
    pub minted: Vec<(String, KeySource)>,
}

impl Mint {
    pub fn mint(&mut self, source: KeySource, spec: KeySpec) -> Result<Minted, String> {
        let kid = format!("k{}", self.minted.len() + 1);
        self.minted.push((kid.clone(), source));
        Ok(Minted { kid, spec })
    }
}

/// One planning step with the given inputs and a fresh mint whose kids continue after `ring`'s.
pub struct Step<'a> {
    pub policy: &'a Policy,
    pub publications: Vec<PublicationFacts>,
    pub rotate_request: Option<&'a str>,
    pub revoke: BTreeSet<String>,
    pub clock_in_sync: bool,
}

impl<'a> Step<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        Step {
            policy,
            publications: Vec::new(),
            rotate_request: None,
            revoke: BTreeSet::new(),
            clock_in_sync: true,
        }
    }

    pub fn run(&self, ring: &KeyRing, now: Timestamp, mint: &mut Mint) -> RotationPlan {
        let input = RotationInput {
            policy: self.policy,
            ring,
            publications: &self.publications,
            rotate_request: self.rotate_request,
            revoke: &self.revoke,
            now,
            clock_in_sync: self.clock_in_sync,
        };
        super::plan_rotation(input, |source, spec| mint.mint(source, spec)).unwrap()
    }
}

/// The ring of [`policy`] once its first key `k1` is active (t 0).
pub fn bootstrapped(mint: &mut Mint) -> KeyRing {
    Step::new(&policy())
        .run(&KeyRing::default(), t(0), mint)
        .ring
}

/// The ring of [`policy`] at t 90: `k1` active, its successor `k2` generated and pending.
pub fn with_successor(mint: &mut Mint) -> KeyRing {
    let ring = bootstrapped(mint);
    Step::new(&policy()).run(&ring, t(90), mint).ring
}
