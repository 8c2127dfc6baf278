//! `rotate` and `revoke`: the manual operations, done the GitOps-safe way the operator reads
//! them, as annotations on the SigningKey. The operator acts; these commands only ask.

use std::collections::BTreeSet;
use std::process::ExitCode;

use jwks_operator::api::{
    REVOKE_ANNOTATION, ROTATE_ANNOTATION, SigningKey, revoke_value, revoked_kids,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use serde_json::json;

use super::CliError;
use super::cluster::{self, Cluster};
use super::format::shown_duration;

/// How often `revoke` retries when the SigningKey changed between its read and its write.
const CONFLICT_RETRIES: usize = 5;

/// Sets the rotate annotation to now; any new value starts a rotation.
pub fn rotate(name: &str, namespace: Option<String>) -> Result<ExitCode, CliError> {
    cluster::block_on(async {
        let cluster = Cluster::connect().await?;
        let namespace = cluster.namespace(namespace);
        let what = format!("signingkey {namespace}/{name}");
        let patch = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: rotate_value(Timestamp::now())}}});
        // A merge patch never creates: a missing SigningKey is a 404, not a new object.
        let key = cluster
            .signing_keys(&namespace)
            .patch(name, &cluster::patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| cluster.error(&what, e))?;
        let pre_publish = key.spec.rotation().pre_publish;
        println!(
            "{what}: rotation requested (the new key signs after prePublish {})",
            shown_duration(&pre_publish)
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Adds `kids` to the revoke annotation. A kid the SigningKey does not hold is refused unless
/// `force` (it may be one the operator already removed, or a typo).
pub fn revoke(
    name: &str,
    namespace: Option<String>,
    kids: &[String],
    force: bool,
) -> Result<ExitCode, CliError> {
    if let Some(bad) = kids
        .iter()
        .find(|kid| kid.is_empty() || kid.contains(',') || kid.contains(char::is_whitespace))
    {
        return Err(CliError::Usage(format!(
            "invalid kid {bad:?}: a kid is non-empty and has no commas or whitespace"
        )));
    }
    cluster::block_on(async {
        let cluster = Cluster::connect().await?;
        let namespace = cluster.namespace(namespace);
        let what = format!("signingkey {namespace}/{name}");
        let api = cluster.signing_keys(&namespace);
        for _ in 0..CONFLICT_RETRIES {
            let key = api.get(name).await.map_err(|e| cluster.error(&what, e))?;
            let held = held_kids(&key);
            let existing = annotation(&key, REVOKE_ANNOTATION);
            let already = revoked_kids(&key);
            // A kid already revoked may have left the status; asking again is harmless.
            let unknown: Vec<&str> = kids
                .iter()
                .map(String::as_str)
                .filter(|kid| !held.contains(kid) && !already.contains(*kid))
                .collect();
            if !unknown.is_empty() && !force {
                return Err(CliError::Failed(format!(
                    "{what} holds no key with kid {} (known kids: {}); use --force to revoke anyway",
                    unknown.join(", "),
                    if held.is_empty() {
                        "none".to_string()
                    } else {
                        held.join(", ")
                    }
                )));
            }
            let revoked = revoke_value(existing, kids);
            // The resourceVersion makes this write fail (409) if the SigningKey changed since the
            // read, so a concurrent revoke is never overwritten.
            let patch = json!({"metadata": {
                "resourceVersion": key.metadata.resource_version,
                "annotations": {REVOKE_ANNOTATION: revoked},
            }});
            match api
                .patch(name, &cluster::patch_params(), &Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(e) => return Err(cluster.error(&what, e)),
                Ok(_) => {}
            }
            let (old, new): (Vec<&str>, Vec<&str>) = kids
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .partition(|kid| already.contains(*kid));
            if !new.is_empty() {
                println!("{what}: revoked {}", new.join(", "));
            }
            if !old.is_empty() {
                println!("{what}: already revoked {}", old.join(", "));
            }
            let active = key.status.as_ref().and_then(|s| s.active_kid.as_deref());
            if let Some(active) = active.filter(|active| kids.iter().any(|k| k == active)) {
                eprintln!(
                    "warning: {active} is the active key of {what}; a fresh key will be generated and activated immediately"
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(CliError::Failed(format!(
            "{what} kept changing while adding to {REVOKE_ANNOTATION}; try again"
        )))
    })
}

/// The rotate annotation's value: RFC 3339 in UTC with microseconds, so that two rotations in
/// the same second still differ.
pub fn rotate_value(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn held_kids(key: &SigningKey) -> Vec<&str> {
    key.status
        .iter()
        .flat_map(|s| &s.keys)
        .map(|k| k.kid.as_str())
        .collect()
}

fn annotation<'a>(key: &'a SigningKey, name: &str) -> Option<&'a str> {
    key.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_values_carry_microseconds_in_utc() {
        let at: Timestamp = "2025-03-01T14:00:00.000001+02:00".parse().unwrap();
        assert_eq!(rotate_value(at), "2025-03-01T12:00:00.000001Z");
        let later: Timestamp = "2025-03-01T12:00:00.000002Z".parse().unwrap();
        assert_ne!(rotate_value(at), rotate_value(later));
    }
}
