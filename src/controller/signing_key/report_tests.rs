//! [`build_status`] and [`build_events`]: which conditions and events each outcome gives.

use kube::runtime::events::{Event, EventType};

use super::fixtures::{Ring, kid, signing_key, t, unchanged};
use super::report::{Outcome, Problem, build_events, build_status};
use super::stored::{Damage, Recovered};
use crate::api::conditions::{ConditionStatus, KeyCondition, KeyReason, Term};
use crate::api::{KeyState, SigningKey, SigningKeyStatus};
use crate::controller::conditions::{Verdict, find, reason_of};
use crate::lifecycle::{Blocked, Change, GenerateReason, RotationPlan};

use ConditionStatus::{False, True, Unknown};
use KeyCondition::{Degraded, Ready, Rotating};

/// One reconcile's outcome, told: the status it writes and the events it publishes.
struct Told {
    status: SigningKeyStatus,
    events: Vec<Event>,
}

/// What a reconcile of `key` that planned `plan` over `recovered` (or met `problem`) tells.
fn tell(
    key: &SigningKey,
    recovered: &Recovered,
    plan: Option<&RotationPlan>,
    problem: Option<&Problem>,
) -> Told {
    let ring = plan.map_or(&recovered.ring, |p| &p.ring);
    let outcome = Outcome {
        key,
        secret_name: "victim".into(),
        ring,
        public: &recovered.public,
        plan,
        damage: &recovered.damage,
        problem,
        now: t(0),
        clock_skew: Default::default(),
    };
    Told {
        status: build_status(&outcome),
        events: build_events(&outcome),
    }
}

/// The status and reason of the condition `type_`.
fn said(status: &SigningKeyStatus, type_: KeyCondition) -> (ConditionStatus, KeyReason) {
    let condition = find(&status.conditions, type_).expect("the condition is set");
    let holds = ConditionStatus::parse(&condition.status).expect("a known status");
    (holds, reason_of(condition).expect("a known reason"))
}

fn message(status: &SigningKeyStatus, type_: KeyCondition) -> String {
    find(&status.conditions, type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn reasons(events: &[Event]) -> Vec<(EventType, &str)> {
    events
        .iter()
        .map(|e| (e.type_, e.reason.as_str()))
        .collect()
}

fn active_ring() -> Recovered {
    Ring::new().active(0).build()
}

fn scheduled(recovered: &Recovered) -> RotationPlan {
    RotationPlan {
        next_rotation_at: Some(t(100)),
        ..unchanged(&recovered.ring)
    }
}

#[test]
fn an_active_key_is_ready_and_scheduled() {
    let recovered = active_ring();
    let plan = scheduled(&recovered);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(said(&told.status, Ready), (True, KeyReason::KeyActive));
    assert_eq!(said(&told.status, Rotating), (False, KeyReason::Scheduled));
    assert_eq!(said(&told.status, Degraded), (False, KeyReason::AsExpected));
    assert_eq!(told.status.active_kid, Some(kid(&recovered.ring, 0)));
    assert_eq!(told.status.keys.len(), 1);
    assert_eq!(told.status.keys[0].state, KeyState::Active);
    assert_eq!(told.status.observed_generation, Some(1));
    assert!(told.events.is_empty());
}

#[test]
fn no_key_is_not_ready_and_without_interval_rotates_by_hand_only() {
    let recovered = Recovered::default();
    let plan = unchanged(&recovered.ring);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(said(&told.status, Ready), (False, KeyReason::NoKey));
    assert_eq!(said(&told.status, Rotating), (False, KeyReason::ManualOnly));
    assert_eq!(told.status.active_kid, None);
}

#[test]
fn a_problem_is_not_ready_degraded_and_a_warning() {
    let recovered = Recovered::default();
    let problem = Problem::new(KeyReason::ImportFailed, "cannot import".into());
    let told = tell(&signing_key(), &recovered, None, Some(&problem));
    assert_eq!(said(&told.status, Ready), (False, KeyReason::ImportFailed));
    assert_eq!(
        said(&told.status, Rotating),
        (Unknown, KeyReason::NotPlanned)
    );
    assert_eq!(
        said(&told.status, Degraded),
        (True, KeyReason::ImportFailed)
    );
    assert_eq!(message(&told.status, Degraded), "cannot import");
    assert_eq!(
        reasons(&told.events),
        [(EventType::Warning, "ImportFailed")]
    );
    assert_eq!(told.events[0].action, "Reconcile");
}

#[test]
fn a_problem_does_not_hide_a_key_that_still_signs() {
    let recovered = active_ring();
    let problem = Problem::new(KeyReason::InvalidSpec, "bad".into());
    let told = tell(&signing_key(), &recovered, None, Some(&problem));
    assert_eq!(said(&told.status, Ready), (True, KeyReason::KeyActive));
    assert_eq!(said(&told.status, Degraded), (True, KeyReason::InvalidSpec));
}

#[test]
fn each_held_rotation_says_why() {
    let recovered = Ring::new().active(0).pending(90).build();
    let blocked = RotationPlan {
        blocked: Some(Blocked {
            kid: kid(&recovered.ring, 1),
            unserved: vec!["public".into()],
            dated_in_future: Vec::new(),
            until: None,
        }),
        ..scheduled(&recovered)
    };
    let full = RotationPlan {
        ring_full: Some(Some(t(130))),
        ..scheduled(&recovered)
    };
    let skewed = RotationPlan {
        held_for_clock: true,
        ..scheduled(&recovered)
    };
    let cases = [
        (&blocked, KeyReason::RotationBlocked, "public"),
        (&full, KeyReason::KeyRingFull, "the next one leaves at"),
        (&skewed, KeyReason::ClockSkew, "clock differs"),
    ];
    for (plan, reason, words) in cases {
        let told = tell(&signing_key(), &recovered, Some(plan), None);
        assert_eq!(said(&told.status, Rotating), (True, reason));
        let text = message(&told.status, Rotating);
        assert!(text.contains(words), "{reason}: {text}");
    }
}

#[test]
fn a_pending_key_is_a_rotation_in_progress() {
    let recovered = Ring::new().active(0).pending(90).build();
    let plan = scheduled(&recovered);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(
        said(&told.status, Rotating),
        (True, KeyReason::RotationInProgress)
    );
    assert!(message(&told.status, Rotating).contains(&kid(&recovered.ring, 1)));
}

#[test]
fn damage_is_degraded_and_announced() {
    let recovered = Recovered {
        damage: vec![Damage::ActiveCopiesStale, Damage::StatusRebuilt],
        ..active_ring()
    };
    let plan = scheduled(&recovered);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(
        said(&told.status, Degraded),
        (True, KeyReason::SecretRepaired)
    );
    assert_eq!(
        reasons(&told.events),
        [
            (EventType::Warning, "SecretRepaired"),
            (EventType::Warning, "StatusRebuilt")
        ]
    );
    let only_rebuilt = Recovered {
        damage: vec![Damage::StatusRebuilt],
        ..active_ring()
    };
    let told = tell(&signing_key(), &only_rebuilt, Some(&plan), None);
    assert_eq!(
        said(&told.status, Degraded),
        (True, KeyReason::StatusRebuilt)
    );
}

#[test]
fn a_lost_private_half_is_degraded() {
    let recovered = Ring::new().active(0).pending(90).lost().build();
    let plan = scheduled(&recovered);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(
        said(&told.status, Degraded),
        (True, KeyReason::PrivateKeysLost)
    );
    assert!(message(&told.status, Degraded).contains(&kid(&recovered.ring, 1)));
}

/// `key` as it was after a reconcile that rebuilt its status.
fn after_rebuild(recovered: &Recovered, plan: &RotationPlan) -> SigningKey {
    let damaged = Recovered {
        damage: vec![Damage::StatusRebuilt],
        ring: recovered.ring.clone(),
        public: recovered.public.clone(),
        ..Recovered::default()
    };
    let mut key = signing_key();
    key.status = Some(tell(&key, &damaged, Some(plan), None).status);
    key
}

#[test]
fn a_repair_stays_visible_until_something_changes() {
    let recovered = active_ring();
    let plan = scheduled(&recovered);
    let key = after_rebuild(&recovered, &plan);
    let told = tell(&key, &recovered, Some(&plan), None);
    assert_eq!(
        said(&told.status, Degraded),
        (True, KeyReason::StatusRebuilt)
    );
    assert_eq!(
        message(&told.status, Degraded),
        message(key.status.as_ref().unwrap(), Degraded)
    );

    let changed = RotationPlan {
        changes: vec![Change::Activated {
            kid: kid(&recovered.ring, 0),
        }],
        ..plan.clone()
    };
    let told = tell(&key, &recovered, Some(&changed), None);
    assert_eq!(said(&told.status, Degraded), (False, KeyReason::AsExpected));

    let mut edited = key.clone();
    edited.metadata.generation = Some(2);
    let told = tell(&edited, &recovered, Some(&plan), None);
    assert_eq!(said(&told.status, Degraded), (False, KeyReason::AsExpected));
}

#[test]
fn each_change_is_one_event_about_its_key() {
    let recovered = Ring::new().retired(0, 50).active(40).pending(90).build();
    let [old, active, next] = [0, 1, 2].map(|i| kid(&recovered.ring, i));
    let changes = vec![
        Change::Generated {
            kid: next.clone(),
            reason: GenerateReason::Scheduled,
        },
        Change::Activated {
            kid: active.clone(),
        },
        Change::Retired { kid: old.clone() },
        Change::Removed { kid: old.clone() },
        Change::Revoked {
            kid: old.clone(),
            was_active: false,
        },
        Change::Lost {
            kid: old.clone(),
            state: KeyState::Retired,
        },
        Change::RotationAlreadyPending { kid: next.clone() },
    ];
    let plan = RotationPlan {
        changes,
        ..scheduled(&recovered)
    };
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    use EventType::{Normal, Warning};
    assert_eq!(
        reasons(&told.events),
        [
            (Normal, "KeyGenerated"),
            (Normal, "KeyActivated"),
            (Normal, "KeyRetired"),
            (Normal, "KeyRemoved"),
            (Warning, "KeyRevoked"),
            (Warning, "KeyLost"),
            (Normal, "RotationRequested"),
        ]
    );
    for (event, change) in told.events.iter().zip(&plan.changes) {
        let about = event.secondary.as_ref().and_then(|r| r.field_path.clone());
        assert_eq!(
            about,
            Some(format!("data[keyring.jwks].keys[kid={}]", change.kid()))
        );
    }
}

/// A plan that generates the ring's only key for `reason` and activates it at once.
fn generated_and_activated(
    recovered: &Recovered,
    reason: GenerateReason,
) -> (String, RotationPlan) {
    let first = kid(&recovered.ring, 0);
    let plan = RotationPlan {
        changes: vec![
            Change::Generated {
                kid: first.clone(),
                reason,
            },
            Change::Activated { kid: first.clone() },
        ],
        ..scheduled(recovered)
    };
    (first, plan)
}

#[test]
fn a_key_generated_and_activated_at_once_is_one_event() {
    let recovered = active_ring();
    let (first, plan) = generated_and_activated(&recovered, GenerateReason::Replacement);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(reasons(&told.events), [(EventType::Normal, "KeyGenerated")]);
    let note = told.events[0].note.clone().unwrap_or_default();
    assert!(
        note.contains(&first) && note.ends_with("it signs now"),
        "{note}"
    );
}

#[test]
fn a_first_generated_key_is_told_by_the_status_alone() {
    let recovered = active_ring();
    let (first, plan) = generated_and_activated(&recovered, GenerateReason::Bootstrap);
    let told = tell(&signing_key(), &recovered, Some(&plan), None);
    assert_eq!(reasons(&told.events), []);
    assert_eq!(
        told.status.active_kid.as_deref(),
        Some(first.as_str()),
        "the status says it instead"
    );
}

#[test]
fn a_first_key_from_an_import_is_announced_as_imported() {
    let recovered = active_ring();
    let mut key = signing_key();
    key.spec.import_from = serde_json::from_value(serde_json::json!({"secretName": "tls"})).ok();
    let plan = RotationPlan {
        changes: vec![Change::Generated {
            kid: kid(&recovered.ring, 0),
            reason: GenerateReason::Bootstrap,
        }],
        ..scheduled(&recovered)
    };
    let told = tell(&key, &recovered, Some(&plan), None);
    assert_eq!(reasons(&told.events), [(EventType::Normal, "KeyImported")]);
}

#[test]
fn a_held_rotation_warns_once_when_its_reason_is_new() {
    let recovered = active_ring();
    let plan = RotationPlan {
        ring_full: Some(None),
        ..scheduled(&recovered)
    };
    let before = |reason: KeyReason| {
        let mut key = signing_key();
        let rotating = Verdict::new(Rotating, True, reason, "before");
        key.status = Some(SigningKeyStatus {
            conditions: vec![rotating.into_condition(&[], Some(1), t(0))],
            ..SigningKeyStatus::default()
        });
        key
    };
    let first = tell(&before(KeyReason::Scheduled), &recovered, Some(&plan), None);
    assert_eq!(
        reasons(&first.events),
        [(EventType::Warning, "KeyRingFull")]
    );
    assert_eq!(first.events[0].action, "Activate");
    let again = tell(
        &before(KeyReason::KeyRingFull),
        &recovered,
        Some(&plan),
        None,
    );
    assert!(again.events.is_empty());
    let quiet = tell(
        &before(KeyReason::RotationInProgress),
        &recovered,
        Some(&scheduled(&recovered)),
        None,
    );
    assert!(quiet.events.is_empty());
}
