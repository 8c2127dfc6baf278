//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): several replicas may
//! run, only the lease holder runs the controllers. A replica that loses the lease stops at
//! once (the caller exits), so two replicas never write at the same time by design rather than
//! by luck; the apiserver's optimistic concurrency guards the overlap anyway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::info;

use super::metrics::OperatorMetrics;
use super::{FIELD_MANAGER, Settings};

/// The Lease's name, in the lease namespace.
pub const LEASE_NAME: &str = "jwks-operator";

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    /// How long a lease holds without renewal; a standby takes over at most this long after the
    /// leader dies.
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    #[error("leader election on Lease {namespace}/{LEASE_NAME} failed: {reason}")]
    Lease { namespace: String, reason: String },
    #[error(
        "lost the leader lease {namespace}/{LEASE_NAME}; stopping so that only the new leader writes"
    )]
    Lost { namespace: String },
}

/// The lease manager for this replica: the lease lasts `lease.duration` (at least 2 s) and is
/// renewed a third of it before it runs out.
async fn lease_manager(
    client: Client,
    lease: &LeaseSettings,
) -> Result<kube_lease_manager::LeaseManager, LeadershipError> {
    let seconds = lease.duration.as_secs().max(2);
    LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(lease.namespace.clone())
        .with_identity(lease.identity.clone())
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .with_field_manager(lease_field_manager(&lease.identity))
        .build()
        .await
        .map_err(|e| LeadershipError::Lease {
            namespace: lease.namespace.clone(),
            reason: e.to_string(),
        })
}

/// The field manager of this replica's Lease writes: one of its own. The lease manager takes an
/// orphaned Lease with a server-side apply that is not forced, so a second replica applying
/// under the same manager would silently take over a lease the first just took (both would
/// report "acquired"); under a manager of its own it gets 409 Conflict and backs off.
fn lease_field_manager(identity: &str) -> String {
    format!("{FIELD_MANAGER}-lease-{identity}")
}

/// Waits for the lease, runs the controllers while it is held, and releases it on shutdown so
/// that a standby takes over at once.
pub async fn run_as_leader(
    client: Client,
    settings: Settings,
    lease: LeaseSettings,
    metrics: Arc<OperatorMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LeadershipError> {
    let manager = lease_manager(client.clone(), &lease).await?;
    let (mut leader, task) = manager.watch().await;
    let shutdown = shutdown.shared();
    info!(
        lease = LEASE_NAME,
        namespace = lease.namespace,
        identity = lease.identity,
        "waiting for the leader lease"
    );
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => changed.map_err(|_| LeadershipError::Lease {
                namespace: lease.namespace.clone(),
                reason: "the lease task stopped".into(),
            })?,
            () = shutdown.clone() => return Ok(()),
        }
    }
    info!(
        lease = LEASE_NAME,
        identity = lease.identity,
        "acquired the leader lease"
    );
    metrics.set_leader(true);
    let lost = async {
        while leader.changed().await.is_ok() {
            if !*leader.borrow() {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        () = super::run(client, settings, metrics.clone(), shutdown) => Ok(()),
        () = lost => Err(LeadershipError::Lost { namespace: lease.namespace.clone() }),
    };
    metrics.set_leader(false);
    if outcome.is_ok() {
        // Closing the channel ends the lease task, which hands the manager back to release.
        drop(leader);
        if let Ok(Ok(manager)) = task.await {
            let _ = manager.release().await;
            info!(lease = LEASE_NAME, "released the leader lease");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_writes_its_lease_under_a_manager_of_its_own() {
        assert_ne!(lease_field_manager("pod-a"), lease_field_manager("pod-b"));
        assert!(lease_field_manager("pod-a").starts_with(FIELD_MANAGER));
        // A field manager may have at most 128 characters; identities are pod names (≤ 253 in
        // theory, ≤ 63 in practice for a Deployment's pods).
        assert!(lease_field_manager(&"p".repeat(63)).len() <= 128);
    }
}
