//! The rotation planner, pure: from the spec, the key ring, the publication facts, the manual
//! requests and the current time, decide the new ring, what changed and when to look again.
//! This is where the guarantees G1 (never sign unseen) and G2 (never withdraw early) are kept;
//! the controller only reads, calls [`plan_rotation`], writes and reports.

#[cfg(test)]
mod hostile;
mod plan;
mod policy;
mod ring;
#[cfg(test)]
mod scenarios;
mod selection;
#[cfg(test)]
mod simulation;
mod terms;
#[cfg(test)]
mod testing;

pub use plan::{
    Blocked, Change, GenerateReason, KeySource, Minted, PublicationFacts, RotationInput,
    RotationPlan, activation_due, plan_revocation, plan_rotation,
};
pub use policy::{Policy, PolicyError};
pub use ring::{KeyRing, MAX_RING_KEYS, RingKey, later};
pub use selection::{key_use, label_selector_matches, selects};
