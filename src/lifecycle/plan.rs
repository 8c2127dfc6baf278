//! [`plan_rotation`]: one step of the key lifecycle.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{KeyState, RotationSpec};
use crate::jose::KeySpec;

use super::ring::{MAX_RING_KEYS, later};
use super::{KeyRing, Policy, RingKey};

/// Everything one planning step depends on. Time is a parameter, so tests drive any timeline.
#[derive(Clone, Copy, Debug)]
pub struct RotationInput<'a> {
    pub policy: &'a Policy,
    pub ring: &'a KeyRing,
    /// One entry per JwksPublication that selects this SigningKey (and only those).
    pub publications: &'a [PublicationFacts],
    /// The current value of the rotate annotation.
    pub rotate_request: Option<&'a str>,
    /// The kids named by the revoke annotation.
    pub revoke: &'a BTreeSet<String>,
    pub now: Timestamp,
    /// Whether `now` agrees with the apiserver's clock. When it does not, nothing that waits
    /// for time to pass happens (no activation of a pending key, no removal after grace): a
    /// clock that jumped forward must not cut prePublish or gracePeriod short.
    pub clock_in_sync: bool,
}

/// What one selecting publication reports: since when it has served each kid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicationFacts {
    pub name: String,
    pub served_since: BTreeMap<String, Timestamp>,
}

/// Where a new key comes from: `spec.importFrom` (only ever for the very first key) or the CSPRNG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Import,
    Generate,
}

/// A key the caller created (and will store) at the planner's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub kid: String,
    pub spec: KeySpec,
}

/// The outcome of one step: the ring to store, what changed (in order), and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    pub ring: KeyRing,
    pub changes: Vec<Change>,
    /// The next instant at which the plan would change on its own (absent: only a change of the
    /// inputs can). The controller requeues exactly then.
    pub wake_at: Option<Timestamp>,
    /// When the active key is expected to hand over to its successor.
    pub next_rotation_at: Option<Timestamp>,
    /// Set while a due activation waits for publications (G1).
    pub blocked: Option<Blocked>,
    /// Set while a rotation is due but the ring already holds [`MAX_RING_KEYS`]: the active key
    /// goes on signing until a retired key leaves (at this instant, if one is retired).
    pub ring_full: Option<Option<Timestamp>>,
    /// Set when an activation or removal is due but was held because the clock is not in sync.
    pub held_for_clock: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Generated {
        kid: String,
        reason: GenerateReason,
    },
    Activated {
        kid: String,
    },
    Retired {
        kid: String,
    },
    Removed {
        kid: String,
    },
    Revoked {
        kid: String,
        was_active: bool,
    },
    /// The Secret no longer holds this key's private half.
    Lost {
        kid: String,
        state: KeyState,
    },
    /// A manual rotation arrived while a successor was already pending; that successor serves it.
    RotationAlreadyPending {
        kid: String,
    },
}

impl Change {
    pub fn kid(&self) -> &str {
        match self {
            Change::Generated { kid, .. }
            | Change::Activated { kid }
            | Change::Retired { kid }
            | Change::Removed { kid }
            | Change::Revoked { kid, .. }
            | Change::Lost { kid, .. }
            | Change::RotationAlreadyPending { kid } => kid,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerateReason {
    /// The first key of the SigningKey: active at once.
    Bootstrap,
    /// The active key was revoked or lost: a fresh key is active at once.
    Replacement,
    Scheduled,
    Manual,
    /// The spec asks for another algorithm or key shape than the active key has.
    ParametersChanged,
}

/// A successor that is due but may not sign yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub kid: String,
    /// Selecting publications that do not serve the kid yet.
    pub unserved: Vec<String>,
    /// Selecting publications whose `publishedAt` for the kid lies in the future: not evidence
    /// of publication (a forged status or a clock gone wrong); they count as not serving it.
    pub dated_in_future: Vec<String>,
    /// When the activation will happen if nothing else changes (absent while some publication
    /// has not served the kid).
    pub until: Option<Timestamp>,
}

/// Plans one step. `mint` creates and returns a new key when the plan needs one; its error
/// aborts the step (nothing is half-planned).
pub fn plan_rotation<E>(
    input: RotationInput<'_>,
    mut mint: impl FnMut(KeySource, KeySpec) -> Result<Minted, E>,
) -> Result<RotationPlan, E> {
    let RotationInput { policy, now, .. } = input;
    let mut ring = input.ring.clone();
    let mut changes = Vec::new();

    revoke(&mut ring, input.revoke, &mut changes);
    bound_removals(&mut ring, policy);
    drop_lost(&mut ring, now, policy, &mut changes);
    keep_one_active(&mut ring, now, policy, &mut changes);
    let mut held_for_clock = false;
    if input.clock_in_sync {
        remove_expired(&mut ring, now, &mut changes);
    } else {
        held_for_clock = ring
            .keys
            .iter()
            .any(|k| k.remove_after.is_some_and(|at| at <= now));
    }

    if ring.active().is_none() {
        let (source, reason) = match input.ring.keys.is_empty() {
            true if policy.import => (KeySource::Import, GenerateReason::Bootstrap),
            true => (KeySource::Generate, GenerateReason::Bootstrap),
            false => (KeySource::Generate, GenerateReason::Replacement),
        };
        let minted = mint(source, policy.key_spec)?;
        changes.push(Change::Generated {
            kid: minted.kid.clone(),
            reason,
        });
        changes.push(Change::Activated {
            kid: minted.kid.clone(),
        });
        ring.keys.push(new_key(minted, now, Some(now)));
        if reason == GenerateReason::Bootstrap {
            // A SigningKey created with the annotation already set has nothing to rotate away from.
            ring.rotate_token = input.rotate_request.map(str::to_owned);
        }
    }

    let mut blocked = None;
    if let Some(pending) = ring.pending().cloned() {
        match activation_time(&pending, input.publications, policy, now) {
            Ok(at) if at <= now && input.clock_in_sync => {
                activate(&mut ring, &pending.kid, now, policy, &mut changes)
            }
            ready => {
                held_for_clock |= matches!(ready, Ok(at) if at <= now);
                if now >= later(pending.created_at, policy.pre_publish) {
                    let (unserved, until) = match ready {
                        Ok(at) => (Vec::new(), Some(at)),
                        Err(unserved) => (unserved, None),
                    };
                    blocked = Some(Blocked {
                        kid: pending.kid.clone(),
                        dated_in_future: dated_in_future(&pending, input.publications, now),
                        unserved,
                        until,
                    });
                }
            }
        }
    }

    let request = input
        .rotate_request
        .filter(|r| ring.rotate_token.as_deref() != Some(*r));
    let mut ring_full = None;
    if let Some(pending) = ring.pending() {
        if let Some(request) = request {
            changes.push(Change::RotationAlreadyPending {
                kid: pending.kid.clone(),
            });
            ring.rotate_token = Some(request.to_owned());
        }
    } else if let Some(active) = ring.active() {
        let reason = if request.is_some() {
            Some(GenerateReason::Manual)
        } else if !policy.accepts(active.spec) {
            Some(GenerateReason::ParametersChanged)
        } else {
            generation_due(active, policy)
                .filter(|due| *due <= now)
                .map(|_| GenerateReason::Scheduled)
        };
        let room = ring.keys.len() < MAX_RING_KEYS;
        if reason.is_some() && !room {
            ring_full = Some(ring.keys.iter().filter_map(|k| k.remove_after).min());
        }
        if let Some(reason) = reason.filter(|_| room) {
            let minted = mint(KeySource::Generate, policy.key_spec)?;
            changes.push(Change::Generated {
                kid: minted.kid.clone(),
                reason,
            });
            ring.keys.push(new_key(minted, now, None));
            if let Some(request) = request {
                ring.rotate_token = Some(request.to_owned());
            }
        }
    }

    let (wake_at, next_rotation_at) = schedule(&ring, input.publications, policy, now);
    Ok(RotationPlan {
        ring,
        changes,
        wake_at,
        next_rotation_at,
        blocked,
        ring_full,
        held_for_clock,
    })
}

/// Only the revocations, for when nothing else can be planned (an invalid spec, a Secret that
/// is not ours, a key that cannot be generated): revocation always wins. No key is generated,
/// so the ring may be left without an active key.
pub fn plan_revocation(ring: &KeyRing, kids: &BTreeSet<String>) -> RotationPlan {
    let mut ring = ring.clone();
    let mut changes = Vec::new();
    revoke(&mut ring, kids, &mut changes);
    RotationPlan {
        ring,
        changes,
        wake_at: None,
        next_rotation_at: None,
        blocked: None,
        ring_full: None,
        held_for_clock: false,
    }
}

/// Revoked kids leave the ring at once, whatever their state (the operator's explicit override
/// of G2).
fn revoke(ring: &mut KeyRing, kids: &BTreeSet<String>, changes: &mut Vec<Change>) {
    ring.keys.retain(|key| {
        let revoked = kids.contains(&key.kid);
        if revoked {
            changes.push(Change::Revoked {
                kid: key.kid.clone(),
                was_active: key.state() == KeyState::Active,
            });
        }
        !revoked
    });
}

/// A retired key leaves at its `removeAfter`, which is never later than the longest grace
/// period allows: a record that says otherwise (damaged or forged) cannot keep a key published
/// for ever. A retired key without one gets the current grace period.
fn bound_removals(ring: &mut KeyRing, policy: &Policy) {
    let longest =
        SignedDuration::try_from(RotationSpec::MAX_GRACE_PERIOD).unwrap_or(policy.grace_period);
    for key in &mut ring.keys {
        if let Some(retired_at) = key.retired_at {
            let bound = later(retired_at, longest);
            key.remove_after = Some(match key.remove_after {
                Some(at) => at.min(bound),
                None => later(retired_at, policy.grace_period),
            });
        }
    }
}

/// A key whose private half is gone can never sign. Pending, it never signed: it goes. Active,
/// it retires now, so its public half stays published for the grace period (G2).
fn drop_lost(ring: &mut KeyRing, now: Timestamp, policy: &Policy, changes: &mut Vec<Change>) {
    ring.keys.retain_mut(|key| {
        if key.held || key.state() == KeyState::Retired {
            return true;
        }
        changes.push(Change::Lost {
            kid: key.kid.clone(),
            state: key.state(),
        });
        if key.state() == KeyState::Active {
            key.retire(now, policy.grace_period);
            changes.push(Change::Retired {
                kid: key.kid.clone(),
            });
            true
        } else {
            false
        }
    });
}

/// Exactly one key signs. A ring with several active keys (only a damaged record can hold one)
/// keeps the most recently activated and retires the others, which keeps them published.
fn keep_one_active(ring: &mut KeyRing, now: Timestamp, policy: &Policy, changes: &mut Vec<Change>) {
    let newest = ring
        .keys
        .iter()
        .filter(|k| k.state() == KeyState::Active)
        .max_by_key(|k| (k.activated_at, k.created_at))
        .map(|k| k.kid.clone());
    for key in &mut ring.keys {
        if key.state() == KeyState::Active && Some(&key.kid) != newest.as_ref() {
            key.retire(now, policy.grace_period);
            changes.push(Change::Retired {
                kid: key.kid.clone(),
            });
        }
    }
}

/// G2: a retired key leaves only once its `removeAfter` has passed.
fn remove_expired(ring: &mut KeyRing, now: Timestamp, changes: &mut Vec<Change>) {
    ring.keys.retain(|key| {
        let expired = key.remove_after.is_some_and(|at| at <= now);
        if expired {
            changes.push(Change::Removed {
                kid: key.kid.clone(),
            });
        }
        !expired
    });
}

fn activate(
    ring: &mut KeyRing,
    kid: &str,
    now: Timestamp,
    policy: &Policy,
    changes: &mut Vec<Change>,
) {
    for key in &mut ring.keys {
        if key.state() == KeyState::Active {
            key.retire(now, policy.grace_period);
            changes.push(Change::Retired {
                kid: key.kid.clone(),
            });
        }
    }
    if let Some(key) = ring.keys.iter_mut().find(|k| k.kid == kid) {
        key.activated_at = Some(now);
        changes.push(Change::Activated {
            kid: kid.to_owned(),
        });
    }
}

/// Whether a step over `ring` at `now` may activate its pending key by what `publications`
/// report: the one decision publications take part in. A caller that reads them from a cache
/// confirms a `true` against a fresh read before planning on it (a publication created a moment
/// ago may not be in the cache, and it gates the activation too); a `false` plans nothing that a
/// lagging cache could make wrong.
pub fn activation_due(
    ring: &KeyRing,
    publications: &[PublicationFacts],
    policy: &Policy,
    now: Timestamp,
) -> bool {
    ring.pending().is_some_and(|pending| {
        activation_time(pending, publications, policy, now).is_ok_and(|at| at <= now)
    })
}

/// G1: the earliest instant the pending key may sign: `prePublish` after its creation and after
/// every selecting publication started serving it; or the publications that do not serve it yet.
fn activation_time(
    key: &RingKey,
    publications: &[PublicationFacts],
    policy: &Policy,
    now: Timestamp,
) -> Result<Timestamp, Vec<String>> {
    let mut at = later(key.created_at, policy.pre_publish);
    let mut unserved = Vec::new();
    for publication in publications {
        match publication.served_since.get(&key.kid) {
            Some(since) if *since <= now => at = at.max(later(*since, policy.pre_publish)),
            _ => unserved.push(publication.name.clone()),
        }
    }
    if unserved.is_empty() {
        Ok(at)
    } else {
        Err(unserved)
    }
}

/// The publications that claim to have served `key` since an instant after `now`.
fn dated_in_future(
    key: &RingKey,
    publications: &[PublicationFacts],
    now: Timestamp,
) -> Vec<String> {
    publications
        .iter()
        .filter(|p| {
            p.served_since
                .get(&key.kid)
                .is_some_and(|since| *since > now)
        })
        .map(|p| p.name.clone())
        .collect()
}

/// The successor is generated `prePublish` before the active key's interval ends, so that it can
/// take over exactly on time.
fn generation_due(active: &RingKey, policy: &Policy) -> Option<Timestamp> {
    let interval = policy.interval?;
    let handover = later(active.activated_at?, interval);
    Some(later(handover, -policy.pre_publish))
}

/// The next instant something changes on its own, and the expected handover time.
fn schedule(
    ring: &KeyRing,
    publications: &[PublicationFacts],
    policy: &Policy,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let removals = ring.keys.iter().filter_map(|k| k.remove_after);
    let (transition, handover) = match (ring.pending(), ring.active()) {
        (Some(pending), _) => match activation_time(pending, publications, policy, now) {
            Ok(at) => (Some(at), Some(at)),
            // Waiting for a publication: its status change wakes the controller. The clock only
            // matters once more, when prePublish has passed and the wait becomes a block.
            Err(_) => {
                let pre_published = later(pending.created_at, policy.pre_publish);
                (
                    Some(pre_published).filter(|at| *at > now),
                    Some(pre_published),
                )
            }
        },
        (None, Some(active)) => (
            generation_due(active, policy),
            policy
                .interval
                .zip(active.activated_at)
                .map(|(interval, at)| later(at, interval)),
        ),
        (None, None) => (None, None),
    };
    (removals.chain(transition).min(), handover)
}

fn new_key(minted: Minted, now: Timestamp, activated_at: Option<Timestamp>) -> RingKey {
    RingKey {
        kid: minted.kid,
        spec: minted.spec,
        created_at: now,
        activated_at,
        retired_at: None,
        remove_after: None,
        held: true,
    }
}
