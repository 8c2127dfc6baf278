//! The connection cap: admitting a connection at the cap sheds the ones that have gone longest
//! without moving a byte.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ConnectionLimits, WatchedStream};

/// Pause after a failed accept before trying again. The usual causes (out of file descriptors,
/// out of memory) last until connections close, and the listener stays readable meanwhile, so
/// retrying at once would spin a core and flood the log.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Linux's (and the BSDs') errno values for "too many open files" in the system and in the
/// process, which `std::io::ErrorKind` does not name.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

/// Connections shed at once when the cap is reached: an eighth of the cap, at most 32 (nginx
/// reclaims idle connections in the same batches). A shed connection closes only when its
/// thread next gets to it, which under load takes a while; shedding one at a time would make the
/// n-th client waiting at the cap wait n times that.
const MAX_SHED_BATCH: usize = 32;

/// The open connections of one server, at most `capacity` of them.
pub struct ConnectionCap {
    capacity: usize,
    shed_batch: usize,
    registry: Arc<Registry>,
}

impl ConnectionCap {
    pub fn new(capacity: usize) -> ConnectionCap {
        let capacity = capacity.max(1);
        ConnectionCap {
            capacity,
            shed_batch: (capacity / 8).clamp(1, MAX_SHED_BATCH),
            registry: Arc::new(Registry {
                epoch: Instant::now(),
                open: Mutex::new(Open::default()),
                closed: Notify::new(),
            }),
        }
    }

    /// The next connection `accept` yields. A failed accept is logged and retried after
    /// [`ACCEPT_BACKOFF`]; when it failed for lack of file descriptors, the stalest connections
    /// are shed first, as at the cap.
    pub async fn accept<T, F, Fut>(&self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    let out_of_descriptors = matches!(error.raw_os_error(), Some(ENFILE | EMFILE));
                    tracing::warn!(%error, "cannot accept a connection");
                    if out_of_descriptors {
                        self.registry.lock().shed_stalest(self.shed_batch);
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// A slot for a new connection. At the cap, the connections that have gone longest without
    /// moving a byte are shed (their [`Slot::shed`] resolves), unless some still are closing, and
    /// this waits until one closes: the cap always holds.
    pub async fn admit(&self) -> Slot {
        loop {
            // Created before looking, so that a connection closing in between still wakes us.
            let closed = self.registry.closed.notified();
            {
                let mut open = self.registry.lock();
                if open.connections.len() < self.capacity {
                    return self.registry.insert(&mut open);
                }
                open.shed_stalest(self.shed_batch);
            }
            closed.await;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.registry.lock().connections.len()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.registry.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open connection's place under the cap, held until it closes.
pub struct Slot {
    id: u64,
    activity: Arc<Activity>,
    registry: Arc<Registry>,
}

impl Slot {
    /// `stream`, closed by its timeouts and recording its progress for the cap.
    pub fn watch<S>(&self, stream: S, limits: &ConnectionLimits) -> WatchedStream<S> {
        WatchedStream::new(
            stream,
            limits,
            Arc::clone(&self.activity),
            self.registry.epoch,
        )
    }

    /// Resolves when the cap sheds this connection to admit another: close it then.
    pub async fn shed(&self) {
        self.activity.shed.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if open
            .connections
            .remove(&self.id)
            .is_some_and(|entry| entry.shed)
        {
            open.shedding -= 1;
        }
        drop(open);
        self.registry.closed.notify_waiters();
    }
}

/// What a connection shares with the cap.
#[derive(Debug)]
pub(super) struct Activity {
    /// When a byte last moved either way, in nanoseconds since the cap's epoch.
    last_progress: AtomicU64,
    shed: Notify,
}

impl Activity {
    pub(super) fn progressed(&self, since_epoch: Duration) {
        let nanos = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        self.last_progress.store(nanos, Ordering::Relaxed);
    }
}

struct Registry {
    epoch: Instant,
    open: Mutex<Open>,
    /// Notified whenever a connection closes.
    closed: Notify,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // The critical sections only move map entries; a panic cannot leave them half done.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(self: &Arc<Self>, open: &mut Open) -> Slot {
        let id = open.next_id;
        open.next_id += 1;
        let activity = Arc::new(Activity {
            last_progress: AtomicU64::new(0),
            shed: Notify::new(),
        });
        activity.progressed(self.epoch.elapsed());
        open.connections.insert(
            id,
            Entry {
                activity: Arc::clone(&activity),
                shed: false,
            },
        );
        Slot {
            id,
            activity,
            registry: Arc::clone(self),
        }
    }
}

#[derive(Default)]
struct Open {
    connections: HashMap<u64, Entry>,
    /// Connections shed and not closed yet.
    shedding: usize,
    next_id: u64,
}

struct Entry {
    activity: Arc<Activity>,
    /// Already told to close.
    shed: bool,
}

impl Open {
    /// Tells the `count` connections that have gone longest without progress to close, unless
    /// connections told earlier are still closing (they free their slots soon).
    fn shed_stalest(&mut self, count: usize) {
        if self.shedding > 0 {
            return;
        }
        let mut by_staleness: Vec<&mut Entry> = self.connections.values_mut().collect();
        let count = count.min(by_staleness.len());
        if count == 0 {
            return;
        }
        by_staleness.select_nth_unstable_by_key(count - 1, |entry| {
            entry.activity.last_progress.load(Ordering::Relaxed)
        });
        for entry in &mut by_staleness[..count] {
            entry.shed = true;
            // Stores a permit if the connection is not waiting yet, so the request is not lost.
            entry.activity.shed.notify_one();
        }
        self.shedding = count;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt as _;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            header_read_timeout: DEADLINE,
            idle_timeout: DEADLINE,
            write_timeout: DEADLINE,
            max_request_head_bytes: 8 * 1024,
        }
    }

    #[tokio::test]
    async fn failed_accepts_back_off_instead_of_spinning() {
        let cap = ConnectionCap::new(2);
        let mut attempts = 0;
        let started = Instant::now();
        let accepted = tokio::time::timeout(
            DEADLINE,
            cap.accept(|| {
                attempts += 1;
                let result = match attempts {
                    1..=4 => Err(std::io::Error::other("no connection")),
                    _ => Ok(attempts),
                };
                std::future::ready(result)
            }),
        )
        .await
        .expect("accept returns once the listener recovers");
        assert_eq!(accepted, 5);
        assert!(
            started.elapsed() >= 4 * ACCEPT_BACKOFF,
            "4 failures took only {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn running_out_of_descriptors_sheds_the_stalest_connection() {
        let cap = ConnectionCap::new(4);
        let stalest = cap.admit().await;
        let newer = cap.admit().await;
        let mut failed = false;
        let accepted = cap
            .accept(|| {
                let result = match std::mem::replace(&mut failed, true) {
                    false => Err(std::io::Error::from_raw_os_error(EMFILE)),
                    true => Ok("accepted"),
                };
                std::future::ready(result)
            })
            .await;
        assert_eq!(accepted, "accepted");
        assert!(stalest.shed().now_or_never().is_some(), "not shed");
        assert!(newer.shed().now_or_never().is_none(), "the newer one shed");
    }

    #[tokio::test]
    async fn admitting_at_the_cap_sheds_the_stalest_and_waits_until_it_closes() {
        let cap = ConnectionCap::new(2);
        let first = cap.admit().await;
        let stalest = cap.admit().await;
        // The connection admitted first moves a byte after the second one was admitted.
        let (near, _far) = tokio::io::duplex(64);
        let mut watched = first.watch(near, &limits());
        watched.write_all(b"x").await.unwrap();

        let mut admitting = std::pin::pin!(cap.admit());
        assert!(
            (&mut admitting).now_or_never().is_none(),
            "admitted above the cap"
        );
        assert!(
            stalest.shed().now_or_never().is_some(),
            "the stalest is not shed"
        );
        assert!(first.shed().now_or_never().is_none(), "the busier one shed");
        assert!(
            (&mut admitting).now_or_never().is_none(),
            "admitted above the cap"
        );
        drop(stalest);
        let admitted = tokio::time::timeout(DEADLINE, admitting)
            .await
            .expect("admitted once the shed connection closed");
        assert_eq!(cap.open(), 2);
        drop((admitted, first, watched));
        tokio::time::timeout(DEADLINE, cap.all_closed())
            .await
            .expect("all closed");
    }

    #[tokio::test]
    async fn a_full_cap_sheds_a_batch_once_and_admits_as_the_batch_closes() {
        let cap = ConnectionCap::new(16);
        assert_eq!(cap.shed_batch, 2);
        let mut open = Vec::new();
        for _ in 0..16 {
            open.push(cap.admit().await);
        }
        let mut admitting = std::pin::pin!(cap.admit());
        assert!(
            (&mut admitting).now_or_never().is_none(),
            "admitted above the cap"
        );
        assert!(
            open[..2]
                .iter()
                .all(|slot| slot.shed().now_or_never().is_some()),
            "the two stalest are not shed"
        );
        assert!(
            open[2..]
                .iter()
                .all(|slot| slot.shed().now_or_never().is_none()),
            "more than a batch shed"
        );
        let mut shed: Vec<Slot> = open.drain(..2).collect();
        drop(shed.pop());
        let first = tokio::time::timeout(DEADLINE, admitting)
            .await
            .expect("admitted once one shed connection closed");
        // The other shed connection is still closing: the next admission sheds nothing more and
        // waits for it.
        let mut admitting = std::pin::pin!(cap.admit());
        assert!(
            (&mut admitting).now_or_never().is_none(),
            "admitted above the cap"
        );
        assert!(
            open.iter().all(|slot| slot.shed().now_or_never().is_none()),
            "shed while a batch is still closing"
        );
        drop(shed);
        let second = tokio::time::timeout(DEADLINE, admitting)
            .await
            .expect("admitted once the batch closed");
        assert_eq!(cap.open(), 16);
        drop((first, second));
    }
}
