//! The planner, one behaviour per test, on a timeline in seconds
//! (interval 100 s, prePublish 10 s, grace 30 s unless a test says otherwise).

use std::collections::BTreeMap;

use super::testing::{Mint, Step, bootstrapped, policy, secs, spec, t, with_successor};
use super::*;
use crate::api::KeyState;
use crate::jose::Algorithm;

fn states(ring: &KeyRing) -> Vec<(&str, KeyState)> {
    ring.keys
        .iter()
        .map(|k| (k.kid.as_str(), k.state()))
        .collect()
}

fn served(name: &str, kids: &[(&str, i64)]) -> PublicationFacts {
    PublicationFacts {
        name: name.into(),
        served_since: kids
            .iter()
            .map(|(k, s)| (k.to_string(), t(*s)))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A ring bootstrapped at t(0): k1 active.
#[test]
fn first_key_is_active_at_once() {
    let mut mint = Mint::default();
    let plan = Step::new(&policy()).run(&KeyRing::default(), t(0), &mut mint);
    assert_eq!(states(&plan.ring), [("k1", KeyState::Active)]);
    assert_eq!(
        plan.changes,
        [
            Change::Generated {
                kid: "k1".into(),
                reason: GenerateReason::Bootstrap
            },
            Change::Activated { kid: "k1".into() },
        ]
    );
    assert_eq!(mint.minted, [("k1".into(), KeySource::Generate)]);
    assert_eq!(plan.next_rotation_at, Some(t(100)));
    assert_eq!(
        plan.wake_at,
        Some(t(90)),
        "the successor is generated prePublish early"
    );
}

#[test]
fn first_key_is_imported_when_import_is_set() {
    let mut mint = Mint::default();
    let policy = Policy {
        import: true,
        ..policy()
    };
    Step::new(&policy).run(&KeyRing::default(), t(0), &mut mint);
    assert_eq!(mint.minted, [("k1".into(), KeySource::Import)]);
}

#[test]
fn nothing_changes_before_the_successor_is_due() {
    let mut mint = Mint::default();
    let ring = bootstrapped(&mut mint);
    let plan = Step::new(&policy()).run(&ring, t(89), &mut mint);
    assert_eq!(plan.ring, ring);
    assert!(plan.changes.is_empty());
}

#[test]
fn successor_is_generated_pre_publish_before_the_interval_ends() {
    let mut mint = Mint::default();
    let ring = bootstrapped(&mut mint);
    let plan = Step::new(&policy()).run(&ring, t(90), &mut mint);
    assert_eq!(
        states(&plan.ring),
        [("k1", KeyState::Active), ("k2", KeyState::Pending)]
    );
    assert_eq!(
        plan.changes,
        [Change::Generated {
            kid: "k2".into(),
            reason: GenerateReason::Scheduled
        }]
    );
    assert_eq!(plan.wake_at, Some(t(100)));
    assert_eq!(plan.next_rotation_at, Some(t(100)));
}

#[test]
fn successor_takes_over_on_time_when_published_at_once() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let mut step = Step::new(&policy);
    step.publications = vec![served("main", &[("k1", 0), ("k2", 90)])];
    let plan = step.run(&ring, t(100), &mut mint);
    assert_eq!(
        states(&plan.ring),
        [("k1", KeyState::Retired), ("k2", KeyState::Active)]
    );
    assert_eq!(
        plan.changes,
        [
            Change::Retired { kid: "k1".into() },
            Change::Activated { kid: "k2".into() }
        ]
    );
    let k1 = plan.ring.get("k1").unwrap();
    assert_eq!(
        (k1.retired_at, k1.remove_after),
        (Some(t(100)), Some(t(130)))
    );
    assert_eq!(
        plan.wake_at,
        Some(t(130)),
        "k1's removal comes before k2's successor (t 190)"
    );
    assert_eq!(plan.next_rotation_at, Some(t(200)));
}

#[test]
fn an_activation_is_due_once_every_selecting_publication_served_the_key_pre_publish_long() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint); // k2 pending since t(90)
    let published = [served("main", &[("k2", 90)])];
    assert!(activation_due(&ring, &published, &policy, t(100)));
    assert!(!activation_due(&ring, &published, &policy, t(99)));
    let recent = [served("main", &[("k2", 95)])];
    assert!(
        !activation_due(&ring, &recent, &policy, t(100)),
        "5 s of 10"
    );
    let partner = [served("main", &[("k2", 90)]), served("partner", &[])];
    assert!(!activation_due(&ring, &partner, &policy, t(100)));
    assert!(
        activation_due(&ring, &[], &policy, t(100)),
        "prePublish alone"
    );
    let only_active = bootstrapped(&mut mint);
    assert!(!activation_due(&only_active, &published, &policy, t(100)));
}

#[test]
fn activation_waits_for_every_selecting_publication() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let mut step = Step::new(&policy);
    step.publications = vec![served("main", &[("k2", 91)]), served("partner", &[])];
    let plan = step.run(&ring, t(100), &mut mint);
    assert_eq!(
        states(&plan.ring),
        states(&ring),
        "G1: the old key keeps signing"
    );
    assert_eq!(
        plan.blocked,
        Some(Blocked {
            dated_in_future: vec![],
            kid: "k2".into(),
            unserved: vec!["partner".into()],
            until: None
        })
    );
    assert_eq!(
        plan.wake_at, None,
        "the publication's status change wakes the controller"
    );

    step.publications[1] = served("partner", &[("k2", 105)]);
    let plan = step.run(&ring, t(105), &mut mint);
    assert_eq!(plan.blocked.as_ref().and_then(|b| b.until), Some(t(115)));
    assert_eq!(
        plan.wake_at,
        Some(t(115)),
        "prePublish counts from the late publication"
    );
    assert_eq!(
        states(&step.run(&ring, t(114), &mut mint).ring),
        states(&ring)
    );
    let plan = step.run(&ring, t(115), &mut mint);
    assert_eq!(plan.ring.active().unwrap().kid, "k2");
    assert_eq!(plan.blocked, None);
}

#[test]
fn retired_key_stays_published_for_grace_period() {
    let mut mint = Mint::default();
    let policy = policy();
    let step = Step::new(&policy);
    let ring = with_successor(&mut mint);
    let ring = step.run(&ring, t(100), &mut mint).ring;
    assert_eq!(step.run(&ring, t(129), &mut mint).ring, ring);
    let plan = step.run(&ring, t(130), &mut mint);
    assert_eq!(states(&plan.ring), [("k2", KeyState::Active)]);
    assert_eq!(plan.changes, [Change::Removed { kid: "k1".into() }]);
}

#[test]
fn manual_rotation_generates_now_and_activates_pre_publish_later() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = bootstrapped(&mut mint);
    let mut step = Step::new(&policy);
    step.rotate_request = Some("2026-11-28T10:00:00Z");
    let plan = step.run(&ring, t(20), &mut mint);
    assert_eq!(
        plan.changes,
        [Change::Generated {
            kid: "k2".into(),
            reason: GenerateReason::Manual
        }]
    );
    assert_eq!(plan.wake_at, Some(t(30)));
    let again = step.run(&plan.ring, t(25), &mut mint);
    assert!(
        again.changes.is_empty(),
        "the same request rotates once: {:?}",
        again.changes
    );
    assert_eq!(
        step.run(&plan.ring, t(30), &mut mint)
            .ring
            .active()
            .unwrap()
            .kid,
        "k2"
    );
}

#[test]
fn manual_rotation_while_a_successor_is_pending_is_served_by_it() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let mut step = Step::new(&policy);
    step.rotate_request = Some("now");
    let plan = step.run(&ring, t(95), &mut mint);
    assert_eq!(
        plan.changes,
        [Change::RotationAlreadyPending { kid: "k2".into() }]
    );
    assert_eq!(plan.ring.keys.len(), 2, "still one successor");
    assert_eq!(plan.ring.rotate_token.as_deref(), Some("now"));
}

#[test]
fn rotate_annotation_present_at_creation_does_not_rotate() {
    let mut mint = Mint::default();
    let policy = policy();
    let mut step = Step::new(&policy);
    step.rotate_request = Some("copied-from-a-template");
    let plan = step.run(&KeyRing::default(), t(0), &mut mint);
    assert_eq!(states(&plan.ring), [("k1", KeyState::Active)]);
    assert!(step.run(&plan.ring, t(1), &mut mint).changes.is_empty());
}

#[test]
fn revoking_the_active_key_activates_a_fresh_key_at_once() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let mut step = Step::new(&policy);
    step.revoke = ["k1".to_string()].into();
    let plan = step.run(&ring, t(95), &mut mint);
    assert_eq!(
        plan.changes,
        [
            Change::Revoked {
                kid: "k1".into(),
                was_active: true
            },
            Change::Generated {
                kid: "k3".into(),
                reason: GenerateReason::Replacement
            },
            Change::Activated { kid: "k3".into() },
        ]
    );
    assert_eq!(
        states(&plan.ring),
        [("k2", KeyState::Pending), ("k3", KeyState::Active)]
    );
    assert_eq!(
        step.run(&plan.ring, t(96), &mut mint).changes,
        [],
        "revocation is idempotent"
    );
}

#[test]
fn revoking_a_retired_key_removes_it_before_its_grace_period_ends() {
    let mut mint = Mint::default();
    let policy = policy();
    let step = Step::new(&policy);
    let ring = step.run(&with_successor(&mut mint), t(100), &mut mint).ring;
    let mut revoking = Step::new(&policy);
    revoking.revoke = ["k1".to_string(), "unknown".to_string()].into();
    let plan = revoking.run(&ring, t(101), &mut mint);
    assert_eq!(
        plan.changes,
        [Change::Revoked {
            kid: "k1".into(),
            was_active: false
        }]
    );
    assert_eq!(states(&plan.ring), [("k2", KeyState::Active)]);
}

#[test]
fn lost_active_key_is_retired_and_replaced_at_once() {
    let mut mint = Mint::default();
    let mut ring = bootstrapped(&mut mint);
    ring.keys[0].held = false;
    let plan = Step::new(&policy()).run(&ring, t(50), &mut mint);
    assert_eq!(
        states(&plan.ring),
        [("k1", KeyState::Retired), ("k2", KeyState::Active)]
    );
    assert_eq!(
        plan.ring.get("k1").unwrap().remove_after,
        Some(t(80)),
        "G2 from the loss"
    );
    assert!(plan.changes.contains(&Change::Lost {
        kid: "k1".into(),
        state: KeyState::Active
    }));
    assert!(plan.ring.active().unwrap().held);
}

#[test]
fn lost_pending_key_is_dropped_because_it_never_signed() {
    let mut mint = Mint::default();
    let policy = policy();
    let mut ring = with_successor(&mut mint);
    ring.keys[1].held = false;
    let plan = Step::new(&policy).run(&ring, t(92), &mut mint);
    assert_eq!(
        plan.changes[0],
        Change::Lost {
            kid: "k2".into(),
            state: KeyState::Pending
        }
    );
    assert_eq!(
        states(&plan.ring),
        [("k1", KeyState::Active), ("k3", KeyState::Pending)],
        "the rotation is still due, so a new successor replaces the lost one"
    );
}

#[test]
fn parameter_change_starts_a_rotation_and_the_next_key_uses_the_new_parameters() {
    let mut mint = Mint::default();
    let ring = bootstrapped(&mut mint);
    let policy = Policy {
        key_spec: spec(Algorithm::EdDsa),
        ..policy()
    };
    let plan = Step::new(&policy).run(&ring, t(5), &mut mint);
    assert_eq!(
        plan.changes,
        [Change::Generated {
            kid: "k2".into(),
            reason: GenerateReason::ParametersChanged
        }]
    );
    assert_eq!(
        plan.ring.get("k1").unwrap().spec,
        spec(Algorithm::Es256),
        "k1 is unchanged"
    );
    assert_eq!(plan.ring.get("k2").unwrap().spec, spec(Algorithm::EdDsa));
    let plan = Step::new(&policy).run(&plan.ring, t(15), &mut mint);
    assert_eq!(plan.ring.active().unwrap().kid, "k2");
    assert!(
        Step::new(&policy)
            .run(&plan.ring, t(16), &mut mint)
            .changes
            .is_empty()
    );
}

#[test]
fn without_an_interval_only_manual_rotation_happens() {
    let mut mint = Mint::default();
    let policy = Policy {
        interval: None,
        ..policy()
    };
    let plan = Step::new(&policy).run(&KeyRing::default(), t(0), &mut mint);
    assert_eq!((plan.wake_at, plan.next_rotation_at), (None, None));
    assert!(
        Step::new(&policy)
            .run(&plan.ring, t(1_000_000), &mut mint)
            .changes
            .is_empty()
    );
}

#[test]
fn several_active_keys_are_reduced_to_the_newest() {
    let mut mint = Mint::default();
    let mut ring = bootstrapped(&mut mint);
    let mut other = ring.keys[0].clone();
    other.kid = "k0".into();
    other.activated_at = Some(t(-5));
    ring.keys.insert(0, other);
    let plan = Step::new(&policy()).run(&ring, t(10), &mut mint);
    assert_eq!(
        states(&plan.ring),
        [("k0", KeyState::Retired), ("k1", KeyState::Active)]
    );
}

#[test]
fn a_failed_mint_aborts_the_step() {
    let input = RotationInput {
        policy: &policy(),
        ring: &KeyRing::default(),
        publications: &[],
        rotate_request: None,
        revoke: &Default::default(),
        now: t(0),
        clock_in_sync: true,
    };
    let result = plan_rotation(input, |_, _| Err::<Minted, _>("import source missing"));
    assert_eq!(result, Err("import source missing"));
}

#[test]
fn a_successor_waits_its_pre_publication_even_without_publications() {
    let mut mint = Mint::default();
    let policy = Policy {
        pre_publish: secs(0),
        ..policy()
    };
    let ring = bootstrapped(&mut mint);
    let mut step = Step::new(&policy);
    step.rotate_request = Some("r");
    let plan = step.run(&ring, t(10), &mut mint);
    assert_eq!(
        plan.ring.pending().unwrap().kid,
        "k2",
        "stored before it can sign (G4)"
    );
    assert_eq!(plan.wake_at, Some(t(10)));
    assert_eq!(
        step.run(&plan.ring, t(10), &mut mint)
            .ring
            .active()
            .unwrap()
            .kid,
        "k2"
    );
}
