//! A controller's cache of objects it does not reconcile, with a readiness any number of
//! reconciles can await at once. kube's `Store::wait_until_ready` keeps one waker (a one-shot
//! channel's): of several reconciles waiting together, only the last to poll is woken, and the
//! others wait for ever. Here one task waits on it and tells everyone through a watch channel.

use std::fmt::Debug;
use std::hash::Hash;

use futures::Stream;
use kube::api::Api;
use kube::runtime::reflector::{self, Lookup, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::Error;

/// A reflector over every object of `api`, kept without managedFields (never read here, and
/// the larger part of an object's size), and the stream of the objects it saw change, for a
/// controller to wake its reconciles by. The store holds a change before the stream yields it,
/// so a reconcile woken by a change reads that change or a later one.
pub fn watch<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let changes = reflector(
        writer,
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object| object.managed_fields_mut().clear()),
    )
    .touched_objects();
    (store, changes)
}

/// A reflector's store and whether it has been filled.
pub struct Cache<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    /// `None` until the first full list is in; then whether it came (`false`: the reflector
    /// stopped first).
    filled: watch::Receiver<Option<bool>>,
    /// What the cache holds, for errors ("SigningKeys").
    what: &'static str,
}

impl<K> Cache<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// Starts waiting for `store` to be filled (on the current runtime).
    pub fn new(store: Store<K>, what: &'static str) -> Self {
        let (filled_tx, filled) = watch::channel(None);
        let waiting = store.clone();
        tokio::spawn(async move {
            let filled = waiting.wait_until_ready().await.is_ok();
            let _ = filled_tx.send(Some(filled));
        });
        Cache {
            store,
            filled,
            what,
        }
    }

    /// The store, once its first full list is in: a reconcile at start-up must not take a
    /// partial cache for the truth.
    pub async fn filled(&self) -> Result<&Store<K>, Error> {
        let mut filled = self.filled.clone();
        match filled.wait_for(Option::is_some).await.as_deref() {
            Ok(Some(true)) => Ok(&self.store),
            _ => Err(Error::CacheStopped(self.what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SigningKey;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    /// Many reconciles waiting at once are all released (with kube's `wait_until_ready` alone,
    /// only the last of them would be).
    #[tokio::test]
    async fn every_waiter_is_released_when_the_cache_is_filled() {
        let (reader, mut writer) = store::<SigningKey>();
        let cache = std::sync::Arc::new(Cache::new(reader, "SigningKeys"));
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.filled().await.map(|_| ()).is_ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        // Woken tasks run at the next yields (a current-thread runtime): no timer involved,
        // which would re-poll a waiter that was never woken and hide the bug.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(waiters.iter().all(|w| w.is_finished()));
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_cache_whose_reflector_stopped_is_an_error() {
        let (reader, writer) = store::<SigningKey>();
        let cache = Cache::new(reader, "SigningKeys");
        drop(writer);
        let error = cache.filled().await.err().unwrap();
        assert_eq!(error.to_string(), "the cache of SigningKeys stopped");
    }
}
