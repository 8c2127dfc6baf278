//! What a reconcile tells the user: the status (with its conditions) and the events. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};

use crate::api::conditions::{ConditionStatus, KeyCondition, KeyReason, Term};
use crate::api::{KeyState, KeyStatus, SigningKey, SigningKeyStatus};
use crate::jose::Jwk;
use crate::lifecycle::{Blocked, Change, GenerateReason, KeyRing, MAX_RING_KEYS, RotationPlan};

use super::super::conditions::{Verdict, find, reason_of, says};
use super::stored::Damage;

/// Why a reconcile could not plan: reported as conditions and a Warning event, then retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// One of the reasons that stop planning (the second group of [`KeyReason`]): it is both
    /// Ready=False's and Degraded=True's reason.
    pub reason: KeyReason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: KeyReason, message: String) -> Self {
        Problem { reason, message }
    }
}

type KeyVerdict = Verdict<KeyCondition, KeyReason>;

/// The outcome of one reconcile, as far as the user sees it.
pub struct Outcome<'a> {
    pub key: &'a SigningKey,
    pub secret_name: String,
    pub ring: &'a KeyRing,
    pub public: &'a BTreeMap<String, Jwk>,
    /// Absent when planning failed (see `problem`).
    pub plan: Option<&'a RotationPlan>,
    pub damage: &'a [Damage],
    pub problem: Option<&'a Problem>,
    pub now: Timestamp,
    /// This process's clock minus the apiserver's, as last measured.
    pub clock_skew: SignedDuration,
}

pub fn build_status(outcome: &Outcome<'_>) -> SigningKeyStatus {
    let Outcome { key, ring, .. } = *outcome;
    let previous = key.status.clone().unwrap_or_default();
    let generation = key.metadata.generation;
    let keys = ring
        .keys
        .iter()
        .filter_map(|k| {
            let jwk = serde_json::to_value(outcome.public.get(&k.kid)?).ok()?;
            Some(KeyStatus {
                kid: k.kid.clone(),
                state: k.state(),
                created_at: MicroTime(k.created_at),
                activated_at: k.activated_at.map(MicroTime),
                retired_at: k.retired_at.map(MicroTime),
                remove_after: k.remove_after.map(MicroTime),
                public_jwk: jwk.as_object()?.clone(),
            })
        })
        .collect();
    let conditions = [
        ready(outcome),
        rotating(outcome),
        degraded(outcome, &previous),
    ]
    .into_iter()
    .map(|verdict| verdict.into_condition(&previous.conditions, generation, outcome.now))
    .collect();
    SigningKeyStatus {
        active_kid: ring.active().map(|k| k.kid.clone()),
        next_rotation_at: outcome.plan.and_then(|p| p.next_rotation_at).map(MicroTime),
        keys,
        conditions,
        observed_generation: generation,
    }
}

fn ready(outcome: &Outcome<'_>) -> KeyVerdict {
    use ConditionStatus::{False, True};
    let verdict =
        |status, reason, message| Verdict::new(KeyCondition::Ready, status, reason, message);
    // A key signs only if the Secret holds it: with the Secret out of reach (not ours, or in a
    // namespace the operator may not touch), the ring is the status's memory of it.
    let active = outcome.ring.active().filter(|k| k.held);
    match (active, outcome.problem) {
        (Some(active), _) => verdict(
            True,
            KeyReason::KeyActive,
            format!(
                "key {} ({}) signs; {} key(s) in the ring",
                active.kid,
                active.spec.algorithm,
                outcome.ring.keys.len()
            ),
        ),
        (None, Some(problem)) => verdict(False, problem.reason, problem.message.clone()),
        (None, None) => verdict(
            False,
            KeyReason::NoKey,
            "no key has been created yet".into(),
        ),
    }
}

fn rotating(outcome: &Outcome<'_>) -> KeyVerdict {
    use ConditionStatus::{False, True};
    use KeyReason::{ClockSkew, KeyRingFull, ManualOnly, RotationBlocked, RotationInProgress};
    let verdict =
        |status, reason, message| Verdict::new(KeyCondition::Rotating, status, reason, message);
    let Some(plan) = outcome.plan.filter(|_| outcome.problem.is_none()) else {
        return verdict(
            ConditionStatus::Unknown,
            KeyReason::NotPlanned,
            "see the Degraded condition".into(),
        );
    };
    if plan.held_for_clock {
        return verdict(True, ClockSkew, clock_message(outcome));
    }
    if let Some(blocked) = &plan.blocked {
        return verdict(True, RotationBlocked, blocked_message(blocked));
    }
    if let Some(until) = plan.ring_full {
        return verdict(True, KeyRingFull, ring_full_message(until));
    }
    match (outcome.ring.pending(), plan.next_rotation_at) {
        (Some(pending), Some(at)) => verdict(
            True,
            RotationInProgress,
            format!("key {} is published ahead and signs from {at}", pending.kid),
        ),
        (Some(pending), None) => verdict(
            True,
            RotationInProgress,
            format!("key {} is published ahead", pending.kid),
        ),
        (None, Some(at)) => verdict(
            False,
            KeyReason::Scheduled,
            format!("next rotation at {at}"),
        ),
        (None, None) => verdict(
            False,
            ManualOnly,
            "no rotation interval: rotate with the jwks-operator.io/rotate annotation".into(),
        ),
    }
}

/// Degraded reports damage found and problems met. Once repaired, the condition stays as it was
/// until the ring or the spec changes, so that a repair is still visible after the fact.
fn degraded(outcome: &Outcome<'_>, previous: &SigningKeyStatus) -> KeyVerdict {
    use ConditionStatus::True;
    use KeyReason::{SecretRepaired, StatusRebuilt};
    let verdict =
        |status, reason, message| Verdict::new(KeyCondition::Degraded, status, reason, message);
    if let Some(problem) = outcome.problem {
        return verdict(True, problem.reason, problem.message.clone());
    }
    if !outcome.damage.is_empty() {
        let reason = if outcome.damage == [Damage::StatusRebuilt] {
            StatusRebuilt
        } else {
            SecretRepaired
        };
        return verdict(True, reason, damage_message(outcome.damage));
    }
    let lost: Vec<&str> = outcome
        .ring
        .keys
        .iter()
        .filter(|k| !k.held)
        .map(|k| k.kid.as_str())
        .collect();
    if !lost.is_empty() {
        return verdict(
            True,
            KeyReason::PrivateKeysLost,
            format!(
                "the private half of {} is lost; the public half stays published until its removeAfter",
                lost.join(", ")
            ),
        );
    }
    let unchanged = outcome.plan.is_some_and(|p| p.changes.is_empty())
        && previous.observed_generation == outcome.key.metadata.generation;
    let sticky = find(&previous.conditions, KeyCondition::Degraded)
        .filter(|c| unchanged && ConditionStatus::parse(&c.status) == Some(True));
    match sticky {
        Some(c) if says(c, True, StatusRebuilt) => verdict(True, StatusRebuilt, c.message.clone()),
        Some(c) => verdict(True, SecretRepaired, c.message.clone()),
        None => verdict(
            ConditionStatus::False,
            KeyReason::AsExpected,
            "no damage found".into(),
        ),
    }
}

fn damage_message(damage: &[Damage]) -> String {
    let items: Vec<String> = damage.iter().map(ToString::to_string).collect();
    format!("repaired: {}", items.join("; "))
}

fn clock_message(outcome: &Outcome<'_>) -> String {
    format!(
        "this operator's clock differs from the apiserver's by {:.1}s (more than {}s): key activations and removals wait until they agree",
        outcome.clock_skew.as_secs_f64(),
        super::super::clock::MAX_CLOCK_SKEW.as_secs()
    )
}

fn ring_full_message(until: Option<Timestamp>) -> String {
    let when = match until {
        Some(at) => format!("; the next one leaves at {at}"),
        None => String::new(),
    };
    format!(
        "a rotation is due but the key ring already holds {MAX_RING_KEYS} keys, the most one Secret keeps; the active key goes on signing until a retired key leaves{when} (shorten rotation.gracePeriod or lengthen rotation.interval)"
    )
}

fn blocked_message(blocked: &Blocked) -> String {
    let future = if blocked.dated_in_future.is_empty() {
        String::new()
    } else {
        format!(
            "; {} report(s) a publishedAt in the future, which is not evidence of publication",
            blocked.dated_in_future.join(", ")
        )
    };
    match blocked.until {
        None => format!(
            "key {} waits for {} to publish it (G1: it signs prePublish after every selecting JWKS serves it){future}",
            blocked.kid,
            blocked.unserved.join(", ")
        ),
        Some(at) => format!(
            "key {} was published late; it signs from {at}, prePublish after the last JWKS served it",
            blocked.kid
        ),
    }
}

/// The events for this outcome, in order.
pub fn build_events(outcome: &Outcome<'_>) -> Vec<Event> {
    let mut events = Vec::new();
    if let Some(problem) = outcome.problem {
        events.push(warning(
            problem.reason.as_str(),
            "Reconcile",
            problem.message.clone(),
        ));
    }
    let damage: Vec<&Damage> = outcome
        .damage
        .iter()
        .filter(|d| **d != Damage::StatusRebuilt)
        .collect();
    if !damage.is_empty() {
        let owned: Vec<Damage> = damage.into_iter().cloned().collect();
        events.push(warning("SecretRepaired", "Repair", damage_message(&owned)));
    }
    if outcome.damage.contains(&Damage::StatusRebuilt) {
        events.push(warning(
            "StatusRebuilt",
            "Repair",
            "the status had lost its keys; rebuilt from the Secret".into(),
        ));
    }
    let Some(plan) = outcome.plan else {
        return events;
    };
    // A key generated and activated in one plan (a replacement) is one transition, told by one
    // event. A SigningKey's first generated key is told by none: creating the SigningKey asked
    // for it, and its status says it is done (Ready, activeKid). With 1,000 new keys those
    // events were a third of the operator's writes. An imported first key is told: where a key
    // came from is worth a record.
    let first_generated: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Generated {
                kid,
                reason: GenerateReason::Bootstrap,
            } if outcome.key.spec.import_from.is_none() => Some(kid.as_str()),
            _ => None,
        })
        .collect();
    let at_once: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Generated { kid, .. } => Some(kid.as_str()),
            _ => None,
        })
        .filter(|kid| {
            let activated = |c: &Change| matches!(c, Change::Activated { kid: a } if a == kid);
            plan.changes.iter().any(activated)
        })
        .collect();
    for change in &plan.changes {
        if first_generated.contains(change.kid()) {
            continue;
        }
        let both = at_once.contains(change.kid());
        if both && matches!(change, Change::Activated { .. }) {
            continue;
        }
        let mut event = change_event(outcome, change);
        if both {
            event.note = event.note.map(|note| format!("{note}; it signs now"));
        }
        event.secondary = Some(key_reference(outcome, change.kid()));
        events.push(event);
    }
    events.extend(rotation_warning(outcome));
    events
}

/// A warning when rotation is held for a reason it was not held for before: once per cause,
/// not at every reconcile while it lasts.
fn rotation_warning(outcome: &Outcome<'_>) -> Option<Event> {
    let previous_reason = outcome
        .key
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, KeyCondition::Rotating))
        .and_then(reason_of::<KeyReason>);
    let Verdict {
        reason, message, ..
    } = rotating(outcome);
    let warned = matches!(
        reason,
        KeyReason::RotationBlocked | KeyReason::KeyRingFull | KeyReason::ClockSkew
    );
    (warned && previous_reason != Some(reason))
        .then(|| warning(reason.as_str(), "Activate", message))
}

fn change_event(outcome: &Outcome<'_>, change: &Change) -> Event {
    let ring = outcome.ring;
    match change {
        Change::Generated { kid, reason } => generated_event(outcome, kid, *reason),
        Change::Activated { kid } => {
            normal("KeyActivated", "Activate", format!("key {kid} signs now"))
        }
        Change::Retired { kid } => {
            let until = ring
                .get(kid)
                .and_then(|k| k.remove_after)
                .map(|t| format!(" until {t}"))
                .unwrap_or_default();
            normal(
                "KeyRetired",
                "Retire",
                format!("key {kid} stopped signing; it stays published{until}"),
            )
        }
        Change::Removed { kid } => normal(
            "KeyRemoved",
            "Remove",
            format!("key {kid} left the Secret and every JWKS after its grace period"),
        ),
        Change::Revoked { kid, was_active } => warning(
            "KeyRevoked",
            "Revoke",
            format!(
                "key {kid} revoked: removed from the Secret and every JWKS now{}",
                if *was_active {
                    "; it was the active key, a fresh key signs at once"
                } else {
                    ""
                }
            ),
        ),
        Change::Lost { kid, state } => warning(
            "KeyLost",
            "Repair",
            format!(
                "the Secret no longer holds the private half of {} key {kid}{}",
                state_name(*state),
                if *state == KeyState::Active {
                    "; it is retired and a fresh key signs"
                } else {
                    ""
                }
            ),
        ),
        Change::RotationAlreadyPending { kid } => normal(
            "RotationRequested",
            "Rotate",
            format!("rotation requested: key {kid} is already published ahead and takes over"),
        ),
    }
}

fn generated_event(outcome: &Outcome<'_>, kid: &str, reason: GenerateReason) -> Event {
    let algorithm = outcome
        .ring
        .get(kid)
        .map(|k| k.spec.algorithm.to_string())
        .unwrap_or_default();
    let why = match reason {
        GenerateReason::Bootstrap if outcome.key.spec.import_from.is_some() => {
            return normal(
                "KeyImported",
                "Import",
                format!("imported key {kid} ({algorithm}) from spec.importFrom"),
            );
        }
        GenerateReason::Bootstrap => "first key",
        GenerateReason::Replacement => "replaces the revoked or lost active key",
        GenerateReason::Scheduled => "scheduled rotation",
        GenerateReason::Manual => "rotation requested by annotation",
        GenerateReason::ParametersChanged => "the spec asks for new key parameters",
    };
    normal(
        "KeyGenerated",
        "Generate",
        format!("generated key {kid} ({algorithm}): {why}"),
    )
}

/// The key an event is about, as a part of the Secret that holds it.
fn key_reference(outcome: &Outcome<'_>, kid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(outcome.secret_name.clone()),
        namespace: outcome.key.namespace(),
        field_path: Some(format!("data[keyring.jwks].keys[kid={kid}]")),
        ..ObjectReference::default()
    }
}

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Pending => "pending",
        KeyState::Active => "active",
        KeyState::Retired => "retired",
    }
}

fn normal(reason: &str, action: &str, note: String) -> Event {
    event(EventType::Normal, reason, action, note)
}

fn warning(reason: &str, action: &str, note: String) -> Event {
    event(EventType::Warning, reason, action, note)
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}
