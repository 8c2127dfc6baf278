//! Running the operator for real: leader election between replicas, and its metrics and health
//! endpoint scraped during a lifecycle.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::support::{self, ChildProcess, TIMEOUT, free_port, http, start_operator_with, wait_for};
use super::*;

/// An operator replica with leader election (a 4 s lease) and its metrics port.
struct Replica {
    process: ChildProcess,
    metrics: String,
}

async fn replica(namespace: &str) -> Replica {
    let metrics = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--leader-election",
        "--leader-election-namespace",
        namespace,
        "--leader-election-lease-seconds",
        "4",
        "--metrics-listen",
        &metrics,
    ];
    let process = start_operator_with(namespace, &flags).await;
    Replica { process, metrics }
}

impl Replica {
    async fn scrape(&self) -> Result<String, String> {
        let response = http(&self.metrics, "GET", "/metrics", &[]).await?;
        (response.status == 200)
            .then(|| response.text())
            .ok_or(format!("status {}", response.status))
    }

    async fn is_leader(&self) -> bool {
        self.scrape()
            .await
            .is_ok_and(|m| m.lines().any(|l| l == "jwks_operator_leader 1"))
    }
}

async fn lease(world: &World) -> Option<Lease> {
    let leases: Api<Lease> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    leases.get_opt("jwks-operator").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_standby_takes_over_when_it_dies() {
    // The World's own operator runs without leader election: stop it, two replicas take over.
    let mut world = World::new().await;
    world.operator.kill();
    // Both start at once, as a Deployment's replicas do: each writes its Lease under a field
    // manager of its own, so only one can take the orphaned lease.
    let mut replicas = vec![replica(&world.ns.name).await, replica(&world.ns.name).await];
    let leader = wait_for(TIMEOUT, "one replica to lead", || async {
        let mut leading = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.is_leader().await {
                leading.push(i);
            }
        }
        match leading.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("leaders: {other:?}").into()),
        }
    })
    .await;
    let standby = 1 - leader;
    for r in &replicas {
        wait_for(TIMEOUT, "every replica ready, standbys too", || async {
            let ready = http(&r.metrics, "GET", "/readyz", &[]).await?;
            if ready.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}", ready.status).into())
            }
        })
        .await;
    }
    let holder = lease(&world)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert!(
        holder.ends_with(&format!("-{}", replicas[leader].process.pid())),
        "{holder}"
    );

    world.create_active_key("first", json!({}), "ES256").await;
    wait_for(TIMEOUT, "the leader to log its work", || async {
        let log = replicas[leader].process.log();
        if log.contains("key ring changed") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    assert!(
        !replicas[standby].process.log().contains("key ring changed"),
        "the standby wrote"
    );
    assert!(
        replicas[standby]
            .process
            .log()
            .contains("waiting for the leader lease")
    );

    let killed_at = Timestamp::now();
    replicas[leader].process.signal("KILL");
    world.create_active_key("second", json!({}), "ES256").await;
    let took_over = Timestamp::now().duration_since(killed_at);
    assert!(replicas[standby].is_leader().await);
    assert!(
        replicas[standby]
            .process
            .log()
            .contains("acquired the leader lease")
    );
    let _ = replicas.remove(leader);
    eprintln!(
        "takeover after the leader was killed: {:.1} s (lease 4 s)",
        took_over.as_secs_f64()
    );
    let path = support::repo_root().join("target/leader-takeover.tsv");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(file, "4\t{:.3}", took_over.as_secs_f64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_the_lease_stops_at_once() {
    let mut world = World::new().await;
    world.operator.kill();
    let mut leader = replica(&world.ns.name).await;
    wait_for(TIMEOUT, "the replica to lead", || async {
        if leader.is_leader().await {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;

    // Another holder takes the lease (as a partition would let a new leader do).
    let leases: Api<Lease> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let steal = json!({"spec": {
        "holderIdentity": "intruder",
        "leaseDurationSeconds": 60,
        "acquireTime": MicroTime(Timestamp::now()),
        "renewTime": MicroTime(Timestamp::now()),
    }});
    leases
        .patch(
            "jwks-operator",
            &PatchParams::default(),
            &Patch::Merge(&steal),
        )
        .await
        .unwrap();
    let pid = leader.process.pid();
    wait_for(TIMEOUT, "the replica to stop", || async {
        if support::process_running(pid) {
            Err("still running".into())
        } else {
            Ok(())
        }
    })
    .await;
    let status = leader.process.kill().expect("its exit status");
    assert!(!status.success(), "it exits with an error: {status}");
    assert!(
        leader.process.log().contains("lost the leader lease"),
        "{}",
        leader.process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_key_age_countdown_rotations_and_publications() {
    let mut world = World::new().await;
    world.operator.kill();
    let metrics = format!("127.0.0.1:{}", free_port());
    world.operator = start_operator_with(&world.ns.name, &["--metrics-listen", &metrics]).await;
    world
        .create_main_publication(json!({"server": {"enabled": false}}))
        .await;
    world
        .create_key("tokens", in_main(), json!({"algorithm": "ES256", "rotation": {"interval": "1h", "prePublish": "1s", "gracePeriod": "1h"}}))
        .await;
    let k1 = world.active_kid("tokens").await;
    world
        .annotate("tokens", "jwks-operator.io/rotate", "once")
        .await;
    world
        .wait_status("tokens", "the rotation done", move |s| {
            active(s).is_some_and(|a| a.kid != k1)
        })
        .await;
    let ns = world.ns.name.clone();
    let scraped = wait_for(TIMEOUT, "the rotation counted", || async {
        let text = http(&metrics, "GET", "/metrics", &[]).await?.text();
        let series =
            format!("jwks_operator_rotations_total{{namespace=\"{ns}\",name=\"tokens\"}} 1");
        if text.contains(&series) {
            Ok(text)
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let value = |name: &str, object: &str| -> f64 {
        let prefix = format!(
            "{name}{{namespace=\"{}\",name=\"{object}\"}} ",
            world.ns.name
        );
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{scraped}"))
            .parse()
            .unwrap()
    };
    assert!(value("jwks_operator_key_age_seconds", "tokens") >= 0.0);
    let countdown = value("jwks_operator_seconds_to_next_rotation", "tokens");
    assert!(countdown > 3000.0 && countdown <= 3600.0, "{countdown}");
    assert_eq!(value("jwks_operator_rotation_blocked", "tokens"), 0.0);
    assert_eq!(
        value("jwks_operator_keys_published", "main"),
        2.0,
        "both keys published"
    );
    for help in [
        "key_age_seconds",
        "seconds_to_next_rotation",
        "rotations",
        "rotation_blocked",
        "reconciliations",
        "reconcile_errors",
        "reconcile_duration_seconds",
        "keys_published",
        "leader",
    ] {
        assert!(
            scraped.contains(&format!("# HELP jwks_operator_{help} ")),
            "no HELP for {help}"
        );
    }
    assert!(scraped.contains("jwks_operator_reconciliations_total{controller=\"signingkey\"}"));
    assert!(scraped.lines().any(|l| l == "jwks_operator_leader 1"));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http(&metrics, "GET", path, &[]).await.unwrap().status,
            200,
            "{path}"
        );
    }
    assert!(!scraped.contains("\"d\""), "G3: nothing private in metrics");

    // A SigningKey that is gone leaves no series behind: a long-running operator's metrics
    // stay the size of what exists.
    world
        .keys
        .delete("tokens", &DeleteParams::default())
        .await
        .unwrap();
    let object = format!("namespace=\"{ns}\",name=\"tokens\"");
    let left = wait_for(TIMEOUT, "the deleted key's series to go", || async {
        let text = http(&metrics, "GET", "/metrics", &[]).await?.text();
        let series: Vec<String> = text
            .lines()
            .filter(|l| l.contains(&object))
            .map(str::to_owned)
            .collect();
        match series.is_empty() {
            true => Ok(text),
            false => Err(format!("still exported: {series:?}").into()),
        }
    })
    .await;
    assert!(
        left.contains("jwks_operator_keys_published{"),
        "the publication's series stay"
    );
}
