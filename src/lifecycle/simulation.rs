//! Property tests: random timelines through the planner, as the controller runs it (wake at
//! `wake_at`, on every publication change and after every user action), with spec edits, manual
//! rotations and revocations, lost private halves, publications that lag, stall, appear or
//! disappear, and crashes that persist the Secret but not the status. Every step checks G1, G2,
//! one active key, no reused kid and an honest wake-up time; each timeline ends by converging.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::testing::{Mint, secs, spec, t};
use super::*;
use crate::api::KeyState;
use crate::jose::Algorithm;

#[derive(Clone, Debug)]
enum Op {
    Wait(i64),
    EditSpec {
        algorithm: usize,
        interval: Option<i64>,
        pre_publish: i64,
        grace: i64,
    },
    Rotate,
    Revoke(usize),
    LosePrivateHalf(usize),
    AddPublication {
        lag: Option<i64>,
    },
    RemovePublication(usize),
    CrashBeforeStatus,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..250).prop_map(Op::Wait),
        1 => (0usize..3, prop::option::weighted(0.8, 20i64..120), 1i64..15, 0i64..60).prop_map(
            |(algorithm, interval, pre_publish, grace)| Op::EditSpec {
                algorithm,
                // CEL: interval > prePublish.
                interval: interval.map(|i| i.max(pre_publish + 1)),
                pre_publish,
                grace,
            }
        ),
        1 => Just(Op::Rotate),
        1 => (0usize..4).prop_map(Op::Revoke),
        1 => (0usize..4).prop_map(Op::LosePrivateHalf),
        1 => prop::option::weighted(0.8, 0i64..20).prop_map(|lag| Op::AddPublication { lag }),
        1 => (0usize..3).prop_map(Op::RemovePublication),
        1 => Just(Op::CrashBeforeStatus),
    ]
}

/// A publication serves each kid `lag` after the status first lists it (never, when stalled).
struct Publication {
    name: String,
    created_at: Timestamp,
    lag: Option<SignedDuration>,
}

struct World {
    now: Timestamp,
    policy: Policy,
    /// The ring as stored in the Secret: what signers read.
    secret: KeyRing,
    /// The kids the status lists, with the instant each was first listed: what publications serve.
    status: BTreeMap<String, Timestamp>,
    publications: Vec<Publication>,
    rotate_request: Option<String>,
    revoke: BTreeSet<String>,
    wake_at: Option<Timestamp>,
    crash_next: bool,
    mint: Mint,
    // What the invariants are checked against, observed from outside the planner.
    retired: BTreeMap<String, (Timestamp, SignedDuration)>,
    revoked: BTreeSet<String>,
    gone: BTreeSet<String>,
    next_request: u32,
}

impl World {
    fn new() -> Self {
        let mut world = World {
            now: t(0),
            policy: Policy {
                key_spec: spec(Algorithm::Es256),
                interval: Some(secs(60)),
                pre_publish: secs(5),
                grace_period: secs(20),
                explicit_shape: false,
                import: false,
            },
            secret: KeyRing::default(),
            status: BTreeMap::new(),
            publications: Vec::new(),
            rotate_request: None,
            revoke: BTreeSet::new(),
            wake_at: None,
            crash_next: false,
            mint: Mint::default(),
            retired: BTreeMap::new(),
            revoked: BTreeSet::new(),
            gone: BTreeSet::new(),
            next_request: 0,
        };
        world.reconcile();
        world
    }

    fn served_since(&self, publication: &Publication, kid: &str) -> Option<Timestamp> {
        let listed = *self.status.get(kid)?;
        let since = later(listed.max(publication.created_at), publication.lag?);
        (since <= self.now).then_some(since)
    }

    fn facts(&self) -> Vec<PublicationFacts> {
        self.publications
            .iter()
            .map(|p| PublicationFacts {
                name: p.name.clone(),
                served_since: self
                    .status
                    .keys()
                    .filter_map(|kid| Some((kid.clone(), self.served_since(p, kid)?)))
                    .collect(),
            })
            .collect()
    }

    /// The next instant a publication starts serving a kid: its status change wakes the controller.
    fn next_publication_change(&self) -> Option<Timestamp> {
        self.publications
            .iter()
            .flat_map(|p| {
                self.status
                    .values()
                    .filter_map(move |listed| Some(later((*listed).max(p.created_at), p.lag?)))
            })
            .filter(|at| *at > self.now)
            .min()
    }

    fn plan(&mut self, ring: &KeyRing) -> RotationPlan {
        let facts = self.facts();
        let input = RotationInput {
            policy: &self.policy,
            ring,
            publications: &facts,
            rotate_request: self.rotate_request.as_deref(),
            revoke: &self.revoke,
            now: self.now,
            clock_in_sync: true,
        };
        let due = activation_due(ring, &facts, &self.policy, self.now);
        let mint = &mut self.mint;
        let plan = plan_rotation(input, |source, spec| mint.mint(source, spec)).unwrap();
        let was_pending = |kid: &str| {
            ring.get(kid)
                .is_some_and(|k| k.state() == KeyState::Pending)
        };
        let activates_pending = plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::Activated { kid } if was_pending(kid)));
        assert!(
            due || !activates_pending,
            "activation_due said no, yet the step activated the pending key: a caller planning \
             on a cache would have skipped the fresh read G1 needs"
        );
        plan
    }

    fn reconcile(&mut self) {
        let before = self.secret.clone();
        let plan = self.plan(&before);
        self.check_step(&before, &plan);

        // Write the Secret, then (unless the process dies in between) the status.
        self.secret = plan.ring.clone();
        for key in &self.secret.keys {
            if let (Some(at), None) = (key.retired_at, self.retired.get(&key.kid)) {
                self.retired
                    .insert(key.kid.clone(), (at, self.policy.grace_period));
            }
        }
        if std::mem::take(&mut self.crash_next) {
            self.wake_at = Some(self.now); // the restarted controller reconciles at once
            return;
        }
        let listed: BTreeSet<&String> = self.secret.keys.iter().map(|k| &k.kid).collect();
        for kid in self.status.keys().filter(|kid| !listed.contains(kid)) {
            self.check_withdrawal(kid);
        }
        let now = self.now;
        self.status.retain(|kid, _| listed.contains(kid));
        for kid in listed {
            self.status.entry(kid.clone()).or_insert(now);
        }
        self.wake_at = plan.wake_at;
    }

    fn check_step(&mut self, before: &KeyRing, plan: &RotationPlan) {
        let after = &plan.ring;
        let active: Vec<&RingKey> = after
            .keys
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .collect();
        assert_eq!(active.len(), 1, "exactly one active key: {after:?}");
        assert!(active[0].held, "the active key's private half is stored");
        assert!(
            after
                .keys
                .iter()
                .filter(|k| k.state() == KeyState::Pending)
                .count()
                <= 1
        );

        for key in &after.keys {
            assert!(!self.gone.contains(&key.kid), "kid {} reused", key.kid);
        }
        for key in &before.keys {
            if after.get(&key.kid).is_none() {
                self.gone.insert(key.kid.clone());
            }
        }
        self.revoked.extend(self.revoke.iter().cloned());

        // G1: a key that starts signing has been served by every selecting publication for
        // prePublish, unless it replaces a revoked or lost key (or is the first key).
        let emergency = plan.changes.iter().any(|c| {
            matches!(
                c,
                Change::Generated {
                    reason: GenerateReason::Bootstrap | GenerateReason::Replacement,
                    ..
                }
            )
        });
        let newly_active = active[0];
        let was_active =
            before.get(&newly_active.kid).map(RingKey::state) == Some(KeyState::Active);
        if !was_active && !emergency {
            assert!(later(newly_active.created_at, self.policy.pre_publish) <= self.now);
            for publication in &self.publications {
                let since = self.served_since(publication, &newly_active.kid);
                assert!(
                    since.is_some_and(|s| later(s, self.policy.pre_publish) <= self.now),
                    "G1: {} active at {} but {} served it since {since:?}",
                    newly_active.kid,
                    self.now,
                    publication.name
                );
            }
        }

        // The wake-up is honest: just before it, nothing would change.
        let quiet_until = [plan.wake_at, self.next_publication_change()]
            .into_iter()
            .flatten()
            .min();
        if let Some(until) =
            quiet_until.filter(|at| *at > self.now + SignedDuration::from_millis(1))
        {
            let saved = self.now;
            self.now = until - SignedDuration::from_millis(1);
            let mut probe = self.plan(after);
            self.mint.minted.truncate(
                self.mint.minted.len().saturating_sub(
                    probe
                        .changes
                        .iter()
                        .filter(|c| matches!(c, Change::Generated { .. }))
                        .count(),
                ),
            );
            self.now = saved;
            probe
                .changes
                .retain(|c| !matches!(c, Change::Revoked { .. }));
            assert_eq!(
                probe.changes,
                [],
                "a transition before the wake-up at {until}"
            );
        }
    }

    /// G2: a kid leaves the status (and so every JWKS) only once revoked, or once its grace period
    /// after retirement has passed, or if it never signed.
    fn check_withdrawal(&self, kid: &str) {
        if self.revoked.contains(kid) {
            return;
        }
        if let Some((retired_at, grace)) = self.retired.get(kid) {
            assert!(
                later(*retired_at, *grace) <= self.now,
                "G2: {kid} retired at {retired_at} withdrawn at {}",
                self.now
            );
        }
    }

    fn wait(&mut self, duration: SignedDuration) {
        let end = later(self.now, duration);
        for _ in 0..10_000 {
            let next = [self.wake_at, self.next_publication_change()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.reconcile();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("no quiet moment in 10 000 wake-ups: the planner does not converge");
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Wait(n) => return self.wait(secs(n)),
            Op::EditSpec {
                algorithm,
                interval,
                pre_publish,
                grace,
            } => {
                let algorithms = [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256];
                self.policy = Policy {
                    key_spec: spec(algorithms[algorithm]),
                    interval: interval.map(secs),
                    pre_publish: secs(pre_publish),
                    grace_period: secs(grace),
                    explicit_shape: false,
                    import: false,
                };
            }
            Op::Rotate => {
                self.next_request += 1;
                self.rotate_request = Some(format!("request-{}", self.next_request));
            }
            Op::Revoke(i) => {
                if let Some(key) = self.secret.keys.get(i) {
                    self.revoke.insert(key.kid.clone());
                }
            }
            Op::LosePrivateHalf(i) => {
                if let Some(key) = self.secret.keys.get_mut(i) {
                    key.held = false;
                }
            }
            Op::AddPublication { lag } => {
                let name = format!("pub-{}", self.publications.len());
                self.publications.push(Publication {
                    name,
                    created_at: self.now,
                    lag: lag.map(secs),
                });
            }
            Op::RemovePublication(i) => {
                if i < self.publications.len() {
                    self.publications.remove(i);
                }
            }
            Op::CrashBeforeStatus => self.crash_next = true,
        }
        self.reconcile();
    }

    /// Once the disturbances stop and every publication serves, the ring settles: one active
    /// key, the successor (if any) takes over, retired keys leave, and without an interval
    /// nothing is left to do.
    fn converge(&mut self) {
        for publication in &mut self.publications {
            publication.lag.get_or_insert(secs(3));
        }
        self.policy.interval = None;
        self.reconcile();
        self.wait(secs(10_000));
        assert_eq!(self.secret.keys.len(), 1, "settled ring: {:?}", self.secret);
        assert_eq!(self.secret.keys[0].state(), KeyState::Active);
        assert_eq!(self.wake_at, None);
        let settled = self.secret.clone();
        assert_eq!(
            self.plan(&settled).ring,
            settled,
            "a settled ring is a fixed point"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_timelines_keep_every_guarantee(ops in prop::collection::vec(op(), 1..60)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
        world.converge();
    }
}

#[test]
fn a_scheduled_rotation_runs_hands_free_for_many_intervals() {
    let mut world = World::new();
    world.apply(&Op::AddPublication { lag: Some(2) });
    world.wait(secs(60 * 50));
    let activations = world.mint.minted.len();
    assert!(
        (49..=51).contains(&activations),
        "{activations} keys in 50 intervals"
    );
    world.converge();
}
