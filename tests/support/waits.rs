//! Waits that poll or watch with a deadline and say what they waited for when it passes.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition, conditions};

/// What a [`wait_for`] check returns while its condition does not hold yet; `?` converts most
/// errors and `&str` into it.
pub type Pending = Box<dyn Error + Send + Sync>;

/// Polls `check` until it returns `Ok`, and returns that value. Panics after `timeout`, with
/// `what` and the last reason `check` gave. Polls quickly at first, then every 500 ms.
///
/// ```ignore
/// let secret = wait_for(TIMEOUT, "the key Secret", || async {
///     secrets.get_opt("k").await?.ok_or("not created yet".into())
/// }).await;
/// ```
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Pending>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(25);
    loop {
        let last = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(reason)) => reason.to_string(),
            Err(_) => "the last check was still running".to_string(),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Watches one object until `condition` holds (`None` passed to the condition means "absent"),
/// and returns the object as then seen. Panics after `timeout`, naming the object and `what`.
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {kind} {name} failed: {e}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {kind} {name} {what}"),
    }
}

/// Waits until the object `name` with this `uid` is gone (deleted, or replaced by a new one).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str, timeout: Duration)
where
    K: Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    wait_until(
        api,
        name,
        timeout,
        "to be deleted",
        conditions::is_deleted(uid),
    )
    .await;
}

/// Polls until the object `name` exists, and returns it.
pub async fn wait_exists<K>(api: &Api<K>, name: &str, timeout: Duration) -> K
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    wait_for(timeout, &format!("{kind} {name} to exist"), || async {
        api.get_opt(name).await?.ok_or_else(|| "not yet".into())
    })
    .await
}

/// Polls until the object `name` does not exist (never created, or deleted).
pub async fn wait_absent<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    wait_for(timeout, &format!("{kind} {name} to be gone"), || async {
        match api.get_opt(name).await? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await
}

/// Whether the object `name` does not exist now.
pub async fn absent<K>(api: &Api<K>, name: &str) -> bool
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
        .is_none()
}
