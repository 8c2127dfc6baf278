//! The operator's Prometheus metrics (`jwks_operator_*`). Ages and countdowns are computed when
//! scraped, from the instants the reconciles recorded, so they are exact between reconciles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use k8s_openapi::jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    /// [`super::Error::category`]: what kind of failure, never which object.
    category: &'static str,
}

/// Reconcile durations: mostly a few API round trips (milliseconds), up to key generation and
/// slow apiservers (seconds).
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// What one SigningKey reconcile leaves for the metrics.
pub struct KeyObservation {
    pub activated_at: Option<Timestamp>,
    pub next_rotation_at: Option<Timestamp>,
    pub blocked: bool,
    pub rotations: u64,
    pub revocations: u64,
}

#[derive(Default)]
struct Instants {
    activated: Option<Timestamp>,
    next_rotation: Option<Timestamp>,
}

pub struct OperatorMetrics {
    registry: Registry,
    reconciliations: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    rotations: Family<ObjectLabels, Counter>,
    revocations: Family<ObjectLabels, Counter>,
    key_age: Family<ObjectLabels, Gauge<f64, AtomicU64>>,
    next_rotation: Family<ObjectLabels, Gauge<f64, AtomicU64>>,
    blocked: Family<ObjectLabels, Gauge>,
    published: Family<ObjectLabels, Gauge>,
    leader: Gauge,
    instants: Mutex<BTreeMap<ObjectLabels, Instants>>,
    /// The publications with a `keys_published` series.
    publications: Mutex<BTreeSet<ObjectLabels>>,
    /// What still exists, asked when scraped ([`OperatorMetrics::track`]).
    existing: OnceLock<Existing>,
}

/// Whether a SigningKey (`keys`) or a JwksPublication (`publications`) of these labels exists.
pub struct Existing {
    pub keys: Box<dyn Fn(&ObjectLabels) -> bool + Send + Sync>,
    pub publications: Box<dyn Fn(&ObjectLabels) -> bool + Send + Sync>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        OperatorMetrics::new()
    }
}

impl OperatorMetrics {
    pub fn new() -> OperatorMetrics {
        let mut metrics = OperatorMetrics {
            registry: Registry::default(),
            reconciliations: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            rotations: Family::default(),
            revocations: Family::default(),
            key_age: Family::default(),
            next_rotation: Family::default(),
            blocked: Family::default(),
            published: Family::default(),
            leader: Gauge::default(),
            instants: Mutex::default(),
            publications: Mutex::default(),
            existing: OnceLock::new(),
        };
        let mut registry = Registry::with_prefix("jwks_operator");
        metrics.register_controller_metrics(&mut registry);
        metrics.register_object_metrics(&mut registry);
        metrics.start_controller_series();
        metrics.registry = registry;
        metrics
    }

    /// How the controllers fare: reconciles, failures, durations, leadership.
    fn register_controller_metrics(&self, registry: &mut Registry) {
        registry.register(
            "reconciliations",
            "Reconciles run, by controller",
            self.reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, by controller and error category",
            self.reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "How long reconciles take, failed ones included, by controller",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or runs without leader election)",
            self.leader.clone(),
        );
    }

    /// Per SigningKey and JwksPublication (`namespace`, `name`); forgotten with the object.
    fn register_object_metrics(&self, registry: &mut Registry) {
        registry.register(
            "rotations",
            "Keys that became active by rotation (scheduled, manual or after a parameter change)",
            self.rotations.clone(),
        );
        registry.register(
            "revocations",
            "Keys revoked through the jwks-operator.io/revoke annotation",
            self.revocations.clone(),
        );
        registry.register_with_unit(
            "key_age",
            "Time since the active key of a SigningKey started signing",
            Unit::Seconds,
            self.key_age.clone(),
        );
        registry.register(
            "seconds_to_next_rotation",
            "Seconds until the active key hands over (negative: overdue, e.g. blocked)",
            self.next_rotation.clone(),
        );
        registry.register(
            "rotation_blocked",
            "1 while a due activation waits for a publication to serve the new key",
            self.blocked.clone(),
        );
        registry.register(
            "keys_published",
            "Keys in a JwksPublication's JWK Set",
            self.published.clone(),
        );
    }

    /// Both controllers' series exist from the start, so a rate() over them is defined.
    fn start_controller_series(&self) {
        for controller in ["signingkey", "jwkspublication"] {
            for category in super::Error::CATEGORIES {
                drop(self.reconcile_errors.get_or_create(&ErrorLabels {
                    controller,
                    category,
                }));
            }
            drop(
                self.reconciliations
                    .get_or_create(&ControllerLabels { controller }),
            );
            drop(
                self.reconcile_duration
                    .get_or_create(&ControllerLabels { controller }),
            );
        }
    }

    pub fn reconciled(&self, controller: &'static str) {
        self.reconciliations
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    pub fn reconcile_failed(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }

    pub fn observe_duration(&self, controller: &'static str, duration: std::time::Duration) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(duration.as_secs_f64());
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn observe_key(&self, labels: ObjectLabels, observation: KeyObservation) {
        if observation.rotations > 0 {
            self.rotations
                .get_or_create(&labels)
                .inc_by(observation.rotations);
        }
        if observation.revocations > 0 {
            self.revocations
                .get_or_create(&labels)
                .inc_by(observation.revocations);
        }
        self.blocked
            .get_or_create(&labels)
            .set(i64::from(observation.blocked));
        let mut instants = self.instants.lock().unwrap_or_else(|e| e.into_inner());
        instants.insert(
            labels,
            Instants {
                activated: observation.activated_at,
                next_rotation: observation.next_rotation_at,
            },
        );
    }

    pub fn observe_publication(&self, labels: ObjectLabels, keys: usize) {
        self.published
            .get_or_create(&labels)
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.publications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels);
    }

    /// From now on, each scrape first forgets the objects that no longer exist. A deleted object
    /// gets no reconcile (the controller reconciles only what its cache holds), so this is where
    /// its series stop.
    pub fn track(&self, existing: Existing) {
        // Set once, by the one `run`; a second caller would track the same objects.
        let _ = self.existing.set(existing);
    }

    fn forget_what_is_gone(&self) {
        let Some(existing) = self.existing.get() else {
            return;
        };
        let keys: Vec<ObjectLabels> = self
            .instants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|labels| !(existing.keys)(labels))
            .cloned()
            .collect();
        for labels in &keys {
            self.forget_key(labels);
        }
        let publications: Vec<ObjectLabels> = self
            .publications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|labels| !(existing.publications)(labels))
            .cloned()
            .collect();
        for labels in &publications {
            self.forget_publication(labels);
        }
    }

    /// Forgets a SigningKey that no longer exists: every series of it stops, counters included,
    /// so the metrics stay the size of what exists.
    pub fn forget_key(&self, labels: &ObjectLabels) {
        self.instants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(labels);
        for family in [&self.key_age, &self.next_rotation] {
            family.remove(labels);
        }
        for family in [&self.rotations, &self.revocations] {
            family.remove(labels);
        }
        self.blocked.remove(labels);
    }

    /// Forgets a JwksPublication that no longer exists (a SigningKey of the same name keeps its
    /// series).
    pub fn forget_publication(&self, labels: &ObjectLabels) {
        self.published.remove(labels);
        self.publications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(labels);
    }

    /// The OpenMetrics text exposition, with ages computed at `now`.
    pub fn encode(&self, now: Timestamp) -> String {
        self.forget_what_is_gone();
        let instants = self.instants.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, instants) in instants.iter() {
            if let Some(at) = instants.activated {
                self.key_age
                    .get_or_create(labels)
                    .set(now.duration_since(at).as_secs_f64());
            }
            match instants.next_rotation {
                Some(at) => {
                    self.next_rotation
                        .get_or_create(labels)
                        .set(at.duration_since(now).as_secs_f64());
                }
                None => {
                    self.next_rotation.remove(labels);
                }
            }
        }
        drop(instants);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> ObjectLabels {
        ObjectLabels {
            namespace: "auth".into(),
            name: "api-tokens".into(),
        }
    }

    #[test]
    fn ages_and_countdowns_are_computed_when_scraped() {
        let metrics = OperatorMetrics::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        metrics.observe_key(
            labels(),
            KeyObservation {
                activated_at: Some(t0),
                next_rotation_at: Some(t0 + k8s_openapi::jiff::SignedDuration::from_secs(100)),
                blocked: false,
                rotations: 1,
                revocations: 0,
            },
        );
        let text = metrics.encode(t0 + k8s_openapi::jiff::SignedDuration::from_secs(30));
        assert!(
            text.contains(
                r#"jwks_operator_key_age_seconds{namespace="auth",name="api-tokens"} 30.0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jwks_operator_seconds_to_next_rotation{namespace="auth",name="api-tokens"} 70.0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"jwks_operator_rotations_total{namespace="auth",name="api-tokens"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP jwks_operator_key_age_seconds Time since the active key"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jwks_operator_reconcile_duration_seconds_count{controller="jwkspublication"} 0"#
            ),
            "{text}"
        );
        metrics.reconcile_failed("signingkey", "conflict");
        metrics.observe_duration("signingkey", std::time::Duration::from_millis(30));
        let text = metrics.encode(t0);
        assert!(
            text.contains(
                r#"jwks_operator_reconcile_errors_total{controller="signingkey",category="conflict"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jwks_operator_reconcile_duration_seconds_bucket{le="0.05",controller="signingkey"} 1"#
            ),
            "{text}"
        );
        metrics.observe_publication(labels(), 2);
        metrics.forget_key(&labels());
        let text = metrics.encode(t0);
        assert!(
            !text.contains("jwks_operator_rotations_total{namespace=\"auth\",name=\"api-tokens\"}")
                && !text.contains("jwks_operator_key_age_seconds{namespace=\"auth\""),
            "every series of a forgotten key stops, counters included: {text}"
        );
        assert!(
            text.contains(r#"jwks_operator_keys_published{namespace="auth",name="api-tokens"} 2"#),
            "a publication of the same name keeps its series: {text}"
        );
        metrics.forget_publication(&labels());
        assert!(!metrics.encode(t0).contains("api-tokens"));
    }

    #[test]
    fn a_scrape_forgets_the_objects_that_are_gone() {
        let metrics = OperatorMetrics::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let observation = || KeyObservation {
            activated_at: Some(t0),
            next_rotation_at: None,
            blocked: false,
            rotations: 1,
            revocations: 0,
        };
        let gone = ObjectLabels {
            namespace: "auth".into(),
            name: "deleted".into(),
        };
        metrics.observe_key(labels(), observation());
        metrics.observe_key(gone.clone(), observation());
        metrics.observe_publication(gone.clone(), 1);
        assert!(metrics.encode(t0).contains("deleted"), "no tracking yet");
        metrics.track(Existing {
            keys: Box::new(|l| l.name != "deleted"),
            publications: Box::new(|l| l.name != "deleted"),
        });
        let text = metrics.encode(t0);
        assert!(!text.contains("deleted"), "{text}");
        assert!(text.contains("api-tokens"), "{text}");
    }
}
