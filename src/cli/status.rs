//! `status`: what the operator reports about SigningKeys — a table of them, or one in detail.
//! Reads the SigningKeys only, never their Secrets.

use std::process::ExitCode;

use jwks_operator::api::{KeyState, SigningKey, SigningKeyStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};

use super::CliError;
use super::cluster::{self, Cluster};
use super::format::{Table, absolute, due, relative, shown_duration};

/// Which SigningKeys to show.
pub enum Scope {
    /// One, in detail.
    Named(String),
    /// A table of a namespace's.
    Namespace,
    /// A table of every namespace's.
    AllNamespaces,
}

pub fn run(scope: Scope, namespace: Option<String>) -> Result<ExitCode, CliError> {
    cluster::block_on(async {
        let cluster = Cluster::connect().await?;
        let namespace = cluster.namespace(namespace);
        let (api, place) = match scope {
            Scope::Named(name) => {
                let what = format!("signingkey {namespace}/{name}");
                let key = cluster
                    .signing_keys(&namespace)
                    .get(&name)
                    .await
                    .map_err(|e| cluster.error(&what, e))?;
                print!("{}", render_detail(&key, Timestamp::now()));
                return Ok(ExitCode::SUCCESS);
            }
            Scope::Namespace => (
                cluster.signing_keys(&namespace),
                format!("namespace {namespace}"),
            ),
            Scope::AllNamespaces => (
                Api::all(cluster.client.clone()),
                "any namespace".to_string(),
            ),
        };
        let mut keys = api
            .list(&ListParams::default())
            .await
            .map_err(|e| cluster.error(&format!("signingkeys in {place}"), e))?
            .items;
        if keys.is_empty() {
            // Like kubectl: the note goes to stderr, so stdout stays parseable.
            eprintln!("No SigningKeys found in {place}.");
            return Ok(ExitCode::SUCCESS);
        }
        keys.sort_by_key(|k| (k.namespace(), k.name_any()));
        let all_namespaces = matches!(scope, Scope::AllNamespaces);
        print!("{}", render_list(&keys, all_namespaces, Timestamp::now()));
        Ok(ExitCode::SUCCESS)
    })
}

/// The table of SigningKeys, one row each, in the given order.
pub fn render_list(keys: &[SigningKey], all_namespaces: bool, now: Timestamp) -> String {
    let mut header = vec![
        "NAME",
        "ALGORITHM",
        "ACTIVE KID",
        "KEYS",
        "NEXT ROTATION",
        "READY",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&header);
    for key in keys {
        let status = key.status.as_ref();
        let mut row = vec![
            key.name_any(),
            algorithm(key),
            status
                .and_then(|s| s.active_kid.clone())
                .unwrap_or_else(|| "-".into()),
            status.map_or("-".into(), |s| s.keys.len().to_string()),
            next_rotation(key, now),
            ready(status),
        ];
        if all_namespaces {
            row.insert(0, key.namespace().unwrap_or_default());
        }
        table.push(row);
    }
    table.render()
}

/// One SigningKey: its settings, its keys and its conditions.
pub fn render_detail(key: &SigningKey, now: Timestamp) -> String {
    let rotation = key.spec.rotation();
    let schedule = format!(
        "prePublish {}, gracePeriod {}",
        shown_duration(&rotation.pre_publish),
        shown_duration(&rotation.grace_period)
    );
    let status = key.status.as_ref();
    let next = match (
        &rotation.interval,
        status.and_then(|s| s.next_rotation_at.as_ref()),
    ) {
        (None, _) => "manual".to_string(),
        (Some(_), None) => "-".to_string(),
        (Some(_), Some(at)) => format!("{} ({})", absolute(at.0), due(now, at.0)),
    };
    let fields = [
        ("Name", key.name_any()),
        ("Namespace", key.namespace().unwrap_or_default()),
        ("Algorithm", algorithm(key)),
        ("Secret", key.secret_name()),
        (
            "Rotation",
            match rotation.interval {
                Some(interval) => format!("every {}, {schedule}", shown_duration(&interval)),
                None => format!("manual only, {schedule}"),
            },
        ),
        ("Next rotation", next),
        (
            "Active kid",
            status
                .and_then(|s| s.active_kid.clone())
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!("{:<15}{value}\n", format!("{label}:")));
    }
    let Some(status) = status else {
        out.push_str("\nno status yet: the operator has not reported on this SigningKey\n");
        return out;
    };
    if let (Some(observed), Some(generation)) =
        (status.observed_generation, key.metadata.generation)
        && observed < generation
    {
        out.push_str(&format!(
            "\nThe status is for generation {observed}; the spec is at generation {generation}.\n"
        ));
    }

    out.push_str("\nKeys:\n");
    if status.keys.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&[
            "KID",
            "STATE",
            "CREATED",
            "ACTIVATED",
            "RETIRED",
            "REMOVE AFTER",
        ]);
        let when = |at: Option<&MicroTime>| at.map_or("-".into(), |at| relative(now, at.0));
        for k in &status.keys {
            table.push(vec![
                k.kid.clone(),
                state(k.state).into(),
                when(Some(&k.created_at)),
                when(k.activated_at.as_ref()),
                when(k.retired_at.as_ref()),
                when(k.remove_after.as_ref()),
            ]);
        }
        out.push_str(&indent(&table.render()));
    }

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in &status.conditions {
            table.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        out.push_str(&indent(&table.render()));
    }
    out
}

fn algorithm(key: &SigningKey) -> String {
    // The serde name is the JOSE name (`ES256`, `ECDH-ES+A128KW`).
    serde_json::to_value(key.spec.algorithm)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", key.spec.algorithm))
}

fn state(state: KeyState) -> &'static str {
    match state {
        KeyState::Pending => "Pending",
        KeyState::Active => "Active",
        KeyState::Retired => "Retired",
    }
}

fn next_rotation(key: &SigningKey, now: Timestamp) -> String {
    let interval = key.spec.rotation.as_ref().and_then(|r| r.interval.as_ref());
    let at = key
        .status
        .as_ref()
        .and_then(|s| s.next_rotation_at.as_ref());
    match (interval, at) {
        (None, _) => "manual".into(),
        (Some(_), None) => "-".into(),
        (Some(_), Some(at)) => due(now, at.0),
    }
}

/// `True (KeyActive)`: the Ready condition's status and reason, `-` when there is none.
fn ready(status: Option<&SigningKeyStatus>) -> String {
    let condition = status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Ready");
    match condition {
        None => "-".into(),
        Some(c) if c.reason.is_empty() => c.status.clone(),
        Some(c) => format!("{} ({})", c.status, c.reason),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2025-03-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn signing_key(value: serde_json::Value) -> SigningKey {
        serde_json::from_value(value).unwrap()
    }

    fn ready_key() -> SigningKey {
        signing_key(json!({
            "apiVersion": "jwks-operator.io/v1alpha1",
            "kind": "SigningKey",
            "metadata": {"name": "api-tokens", "namespace": "auth", "generation": 2},
            "spec": {
                "algorithm": "ES256",
                "rotation": {"interval": "720h", "prePublish": "1h", "gracePeriod": "24h"}
            },
            "status": {
                "activeKid": "kid-new",
                "nextRotationAt": "2025-03-31T11:59:59.000000Z",
                "observedGeneration": 2,
                "keys": [
                    {
                        "kid": "kid-old", "state": "Retired",
                        "createdAt": "2025-01-30T12:00:00.000000Z",
                        "activatedAt": "2025-01-30T12:00:00.000000Z",
                        "retiredAt": "2025-03-01T11:57:00.000000Z",
                        "removeAfter": "2025-03-02T11:00:00.000000Z",
                        "publicJwk": {"kty": "EC"}
                    },
                    {
                        "kid": "kid-new", "state": "Active",
                        "createdAt": "2025-03-01T10:57:00.000000Z",
                        "activatedAt": "2025-03-01T11:57:00.000000Z",
                        "publicJwk": {"kty": "EC"}
                    }
                ],
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KeyActive",
                    "message": "kid-new signs", "lastTransitionTime": "2025-03-01T11:57:00Z"
                }]
            }
        }))
    }

    fn bare_key(name: &str, namespace: &str) -> SigningKey {
        signing_key(json!({
            "apiVersion": "jwks-operator.io/v1alpha1",
            "kind": "SigningKey",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"algorithm": "ECDH-ES+A128KW"}
        }))
    }

    #[test]
    fn list_shows_one_aligned_row_per_key_with_dashes_for_missing_status() {
        let text = render_list(&[ready_key(), bare_key("enc", "auth")], false, now());
        assert_eq!(
            text,
            "NAME         ALGORITHM        ACTIVE KID   KEYS   NEXT ROTATION   READY\n\
             api-tokens   ES256            kid-new      2      in 29d 23h      True (KeyActive)\n\
             enc          ECDH-ES+A128KW   -            -      manual          -\n"
        );
    }

    #[test]
    fn list_with_all_namespaces_leads_with_the_namespace() {
        let text = render_list(
            &[bare_key("a", "ns-1"), bare_key("b", "other")],
            true,
            now(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE   NAME   ALGORITHM"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("ns-1        a      ECDH-ES+A128KW"),
            "{text}"
        );
        assert!(lines[2].starts_with("other       b      "), "{text}");
    }

    #[test]
    fn list_says_overdue_when_the_rotation_time_has_passed() {
        let mut key = ready_key();
        let status = key.status.as_mut().unwrap();
        status.next_rotation_at = Some(MicroTime("2025-03-01T11:55:00Z".parse().unwrap()));
        status.conditions.clear();
        let text = render_list(&[key], false, now());
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "api-tokens   ES256       kid-new      2      overdue 5m      -"
        );
    }

    #[test]
    fn list_shows_a_dash_when_a_rotating_key_has_no_next_rotation_yet() {
        let mut key = ready_key();
        key.status = None;
        let text = render_list(&[key], false, now());
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "api-tokens   ES256       -            -      -               -"
        );
    }

    #[test]
    fn detail_shows_settings_keys_with_relative_times_and_conditions() {
        let text = render_detail(&ready_key(), now());
        assert_eq!(
            text,
            "Name:          api-tokens\n\
             Namespace:     auth\n\
             Algorithm:     ES256\n\
             Secret:        api-tokens\n\
             Rotation:      every 720h, prePublish 1h, gracePeriod 24h\n\
             Next rotation: 2025-03-31T11:59:59Z (in 29d 23h)\n\
             Active kid:    kid-new\n\
             \n\
             Keys:\n\
             \x20 KID       STATE     CREATED     ACTIVATED   RETIRED   REMOVE AFTER\n\
             \x20 kid-old   Retired   30d ago     30d ago     3m ago    in 23h\n\
             \x20 kid-new   Active    1h 3m ago   3m ago      -         -\n\
             \n\
             Conditions:\n\
             \x20 TYPE    STATUS   REASON      MESSAGE\n\
             \x20 Ready   True     KeyActive   kid-new signs\n"
        );
    }

    #[test]
    fn detail_without_status_says_so_and_uses_the_defaults() {
        let mut key = bare_key("enc", "auth");
        key.spec.secret_name = Some("enc-keys".into());
        let text = render_detail(&key, now());
        assert!(text.contains("Secret:        enc-keys\n"), "{text}");
        assert!(
            text.contains("Rotation:      manual only, prePublish 1h, gracePeriod 24h\n"),
            "{text}"
        );
        assert!(text.contains("Next rotation: manual\n"), "{text}");
        assert!(text.contains("Active kid:    -\n"), "{text}");
        assert!(
            text.ends_with("\nno status yet: the operator has not reported on this SigningKey\n"),
            "{text}"
        );
        assert!(!text.contains("Keys:"), "{text}");
    }

    #[test]
    fn detail_notes_a_status_older_than_the_spec_and_empty_lists() {
        let mut key = ready_key();
        key.metadata.generation = Some(3);
        let status = key.status.as_mut().unwrap();
        status.keys.clear();
        status.conditions.clear();
        let text = render_detail(&key, now());
        assert!(
            text.contains("The status is for generation 2; the spec is at generation 3."),
            "{text}"
        );
        assert!(text.contains("Keys:\n  none\n"), "{text}");
        assert!(text.ends_with("Conditions:\n  none\n"), "{text}");
    }
}
