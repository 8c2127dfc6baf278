//! The planner against inputs nobody should write: schedules that would grow the ring without
//! bound, publication times in the future, records that promise a key for ever, and clocks that
//! jump. G1 and G2 hold throughout.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::testing::{Mint, Step, policy, secs, t, with_successor};
use super::*;
use crate::api::{KeyState, RotationSpec};

fn served(name: &str, kid: &str, since: Timestamp) -> PublicationFacts {
    PublicationFacts {
        name: name.into(),
        served_since: BTreeMap::from([(kid.to_owned(), since)]),
    }
}

#[test]
fn a_short_interval_with_a_long_grace_stops_growing_the_ring_at_its_cap() {
    // interval 2 s, prePublish 1 s, grace 720 h: every key stays for a month.
    let policy = Policy {
        interval: Some(secs(2)),
        pre_publish: secs(1),
        grace_period: SignedDuration::from_hours(720),
        ..policy()
    };
    let mut mint = Mint::default();
    let mut ring = KeyRing::default();
    let mut now = t(0);
    let mut last = None;
    for _ in 0..400 {
        let plan = Step::new(&policy).run(&ring, now, &mut mint);
        ring = plan.ring.clone();
        assert!(ring.keys.len() <= MAX_RING_KEYS, "{}", ring.keys.len());
        now = plan
            .wake_at
            .unwrap_or(now + secs(1))
            .max(now + SignedDuration::from_millis(500));
        last = Some(plan);
    }
    let last = last.unwrap();
    assert_eq!(ring.keys.len(), MAX_RING_KEYS);
    assert!(ring.active().is_some(), "the active key goes on signing");
    let first_removal = ring.keys.iter().filter_map(|k| k.remove_after).min();
    assert_eq!(last.ring_full, Some(first_removal));
    assert!(first_removal.is_some());
}

#[test]
fn a_full_ring_keeps_a_manual_rotation_for_later() {
    let policy = Policy {
        interval: None,
        ..policy()
    };
    let mut mint = Mint::default();
    let mut ring = Step::new(&policy)
        .run(&KeyRing::default(), t(0), &mut mint)
        .ring;
    // Fill the ring with retired keys.
    for i in 0..MAX_RING_KEYS - 1 {
        let mut key = ring.keys[0].clone();
        key.kid = format!("old{i}");
        key.activated_at = Some(t(0));
        key.retired_at = Some(t(1));
        key.remove_after = Some(t(1000 + i as i64));
        ring.keys.push(key);
    }
    let mut step = Step::new(&policy);
    step.rotate_request = Some("now");
    let plan = step.run(&ring, t(10), &mut mint);
    assert_eq!(plan.ring_full, Some(Some(t(1000))));
    assert!(plan.ring.pending().is_none());
    assert_eq!(plan.ring.rotate_token, None, "the request is not used up");
    // Once a retired key has left, the same request rotates.
    let plan = step.run(&plan.ring, t(1000), &mut mint);
    assert!(plan.ring.pending().is_some());
    assert_eq!(plan.ring.rotate_token.as_deref(), Some("now"));
}

#[test]
fn a_publication_time_in_the_future_is_not_evidence_of_publication() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let pending = ring.pending().unwrap().kid.clone();
    let mut step = Step::new(&policy);
    // Claims to have served the key since long ago… in the year 2500.
    step.publications = vec![served(
        "forged",
        &pending,
        Timestamp::from_second(16_725_225_600).unwrap(),
    )];
    for now in [100, 200, 10_000] {
        let plan = step.run(&ring, t(now), &mut mint);
        assert_eq!(
            plan.ring.pending().map(|k| k.kid.as_str()),
            Some(pending.as_str()),
            "at {now}"
        );
        let blocked = plan.blocked.unwrap();
        assert_eq!(blocked.dated_in_future, ["forged"]);
        assert_eq!(blocked.unserved, ["forged"]);
    }
    // Served from a real instant: activates prePublish after it.
    step.publications = vec![served("forged", &pending, t(95))];
    let plan = step.run(&ring, t(105), &mut mint);
    assert_eq!(
        plan.ring.active().map(|k| k.kid.as_str()),
        Some(pending.as_str())
    );
}

#[test]
fn a_record_cannot_keep_a_retired_key_beyond_the_longest_grace_period() {
    let mut mint = Mint::default();
    let mut ring = Step::new(&policy())
        .run(&KeyRing::default(), t(0), &mut mint)
        .ring;
    let mut forged = ring.keys[0].clone();
    forged.kid = "forged".into();
    forged.held = false;
    forged.retired_at = Some(t(0));
    forged.remove_after = Some(Timestamp::MAX);
    ring.keys.push(forged);
    let longest = SignedDuration::try_from(RotationSpec::MAX_GRACE_PERIOD).unwrap();
    let plan = Step::new(&policy()).run(&ring, t(1), &mut mint);
    assert_eq!(
        plan.ring.get("forged").unwrap().remove_after,
        Some(t(0) + longest)
    );
    let plan = Step::new(&policy()).run(&plan.ring, t(0) + longest, &mut mint);
    assert!(plan.ring.get("forged").is_none());
}

#[test]
fn a_clock_out_of_sync_holds_activation_and_removal_but_not_revocation() {
    let mut mint = Mint::default();
    let policy = policy();
    let ring = with_successor(&mut mint);
    let mut step = Step::new(&policy);
    step.clock_in_sync = false;
    let plan = step.run(&ring, t(100), &mut mint);
    assert!(plan.held_for_clock);
    assert_eq!(plan.ring, ring, "the pending key does not activate");
    let ring = Step::new(&policy).run(&ring, t(100), &mut mint).ring;
    let plan = step.run(&ring, t(130), &mut mint);
    assert!(plan.held_for_clock);
    assert_eq!(plan.ring.keys.len(), 2, "the retired key is not removed");
    step.revoke = ["k1".to_owned()].into();
    let plan = step.run(&ring, t(130), &mut mint);
    assert_eq!(
        plan.ring.keys.len(),
        1,
        "revocation does not wait for the clock"
    );
    let plan = Step::new(&policy).run(&ring, t(130), &mut mint);
    assert!(!plan.held_for_clock);
    assert_eq!(plan.ring.keys.len(), 1);
}

/// One planner step at an arbitrary instant: the clock may go backwards and forwards.
#[derive(Clone, Debug)]
enum Jump {
    To(i64),
    Publish { lag: i64 },
    Rotate,
}

fn jump() -> impl Strategy<Value = Jump> {
    prop_oneof![
        6 => (-500i64..2_000).prop_map(Jump::To),
        2 => (-200i64..200).prop_map(|lag| Jump::Publish { lag }),
        1 => Just(Jump::Rotate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever order the planner sees instants in, it activates a key only when, at that
    /// instant, the key was created and served (at a time not in the future) at least prePublish
    /// ago, and removes a retired key only at or after retiredAt + gracePeriod.
    #[test]
    fn a_clock_that_jumps_never_breaks_g1_or_g2(jumps in prop::collection::vec(jump(), 1..80)) {
        let policy = policy();
        let mut mint = Mint::default();
        let mut ring = KeyRing::default();
        let mut now = t(0);
        let mut served_since: BTreeMap<String, Timestamp> = BTreeMap::new();
        let mut rotate = 0;
        for jump in jumps {
            match jump {
                Jump::To(at) => now = t(at),
                Jump::Publish { lag } => {
                    for key in &ring.keys {
                        served_since.entry(key.kid.clone()).or_insert(now + secs(lag));
                    }
                }
                Jump::Rotate => rotate += 1,
            }
            let mut step = Step::new(&policy);
            step.publications = vec![PublicationFacts { name: "main".into(), served_since: served_since.clone() }];
            let token = rotate.to_string();
            step.rotate_request = (rotate > 0).then_some(token.as_str());
            let before = ring.clone();
            let plan = step.run(&before, now, &mut mint);
            for change in &plan.changes {
                match change {
                    Change::Activated { kid } if before.get(kid).is_some_and(|k| k.state() == KeyState::Pending) => {
                        let key = before.get(kid).unwrap();
                        prop_assert!(later(key.created_at, policy.pre_publish) <= now, "G1: {kid} activated before prePublish after creation");
                        let since = served_since.get(kid).copied();
                        prop_assert!(since.is_some_and(|s| s <= now && later(s, policy.pre_publish) <= now),
                            "G1: {kid} activated at {now} although served since {since:?}");
                    }
                    Change::Removed { kid } => {
                        let key = before.get(kid).unwrap();
                        let retired = key.retired_at.unwrap();
                        prop_assert!(later(retired, policy.grace_period) <= now, "G2: {kid} removed at {now}, retired at {retired}");
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(plan.ring.keys.iter().filter(|k| k.state() == KeyState::Active).count(), 1);
            ring = plan.ring;
        }
    }
}
