//! Spacing a publication's writes. Keys change one by one (1,000 new keys come out of the
//! SigningKey controller a few at a time), and a publication that wrote at each change wrote its
//! ConfigMap, its status and an event once per two or three keys. A publication that wrote less
//! than [`WRITE_INTERVAL`] ago now waits out the rest of it and then writes every change since in
//! one go. The first change after a quiet spell is written at once; so is every change that
//! removes a kid (a revocation leaves every JWKS at once, DESIGN §3) or answers a spec change.
//! Waiting only delays additions, which G1 already makes wait: `publishedAt` is still the
//! instant of the write that added each kid.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::JwksPublication;

/// The shortest time between two ConfigMap writes of one publication that only add keys.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(2);

/// When each publication last wrote its ConfigMap, by UID: only writes within the interval are
/// kept, so the map holds at most the publications that wrote in the last [`WRITE_INTERVAL`].
#[derive(Debug)]
pub struct WritePacing {
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl WritePacing {
    pub fn new(interval: Duration) -> Self {
        WritePacing {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// How long the publication with `uid` must still wait before its next write, if at all.
    pub fn wait(&self, uid: &str, now: Instant) -> Option<Duration> {
        let last = self.last.lock().ok()?;
        let wrote = last.get(uid)?;
        let due = *wrote + self.interval;
        (due > now).then(|| due - now)
    }

    /// Records a write of the publication with `uid` at `now`, and forgets writes that no longer
    /// hold anything back.
    pub fn wrote(&self, uid: &str, now: Instant) {
        if let Ok(mut last) = self.last.lock() {
            last.retain(|_, at| now.saturating_duration_since(*at) < self.interval);
            last.insert(uid.to_owned(), now);
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last.lock().map(|last| last.len()).unwrap_or_default()
    }
}

/// Whether a write of `publication` that would publish `kids` may wait: its spec change is
/// reported (`observedGeneration` current) and every kid it publishes now stays. Anything else
/// (a removal, a new selector, a first write) is written at once.
pub fn may_wait(publication: &JwksPublication, kids: &BTreeSet<String>) -> bool {
    let Some(status) = publication.status.as_ref() else {
        return false;
    };
    let settled = status.observed_generation.is_some()
        && status.observed_generation == publication.metadata.generation;
    settled && status.keys.iter().all(|key| kids.contains(&key.kid))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::named;
    use super::*;
    use crate::api::{JwksPublicationStatus, PublishedKey};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn publication(generation: i64, observed: Option<i64>, kids: &[&str]) -> JwksPublication {
        let mut publication = named("main", json!({}));
        publication.metadata.generation = Some(generation);
        publication.status = Some(JwksPublicationStatus {
            observed_generation: observed,
            keys: kids
                .iter()
                .map(|kid| PublishedKey {
                    kid: (*kid).into(),
                    published_at: MicroTime(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..Default::default()
        });
        publication
    }

    fn kids(kids: &[&str]) -> BTreeSet<String> {
        kids.iter().map(|kid| (*kid).to_owned()).collect()
    }

    #[test]
    fn a_write_waits_out_the_interval_after_the_last_one() {
        let pacing = WritePacing::new(Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(pacing.wait("a", start), None, "never written: at once");
        pacing.wrote("a", start);
        let later = start + Duration::from_millis(500);
        assert_eq!(pacing.wait("a", later), Some(Duration::from_millis(1500)));
        assert_eq!(pacing.wait("b", later), None, "per publication");
        assert_eq!(pacing.wait("a", start + Duration::from_secs(2)), None);
    }

    #[test]
    fn writes_older_than_the_interval_are_forgotten() {
        let pacing = WritePacing::new(Duration::from_secs(2));
        let start = Instant::now();
        for (i, uid) in ["a", "b", "c"].into_iter().enumerate() {
            pacing.wrote(uid, start + Duration::from_secs(i as u64));
        }
        // At 2 s, a's write (0 s) holds nothing back any more; b's (1 s) and c's (2 s) do.
        assert_eq!(pacing.remembered(), 2);
        pacing.wrote("d", start + Duration::from_secs(10));
        assert_eq!(pacing.remembered(), 1);
    }

    #[test]
    fn only_additions_to_a_reported_spec_may_wait() {
        let settled = publication(3, Some(3), &["k1", "k2"]);
        assert!(
            may_wait(&settled, &kids(&["k1", "k2", "k3"])),
            "an addition"
        );
        assert!(
            may_wait(&settled, &kids(&["k1", "k2"])),
            "no change of kids"
        );
        assert!(
            !may_wait(&settled, &kids(&["k2", "k3"])),
            "a removal (a revocation, a grace period's end) is written at once"
        );
        let spec_changed = publication(4, Some(3), &["k1"]);
        assert!(!may_wait(&spec_changed, &kids(&["k1", "k2"])));
        let never_reported = publication(1, None, &[]);
        assert!(!may_wait(&never_reported, &kids(&["k1"])));
        let mut no_status = publication(1, Some(1), &[]);
        no_status.status = None;
        assert!(!may_wait(&no_status, &kids(&["k1"])));
    }
}
