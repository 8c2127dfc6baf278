//! The SigningKey reconcile's decisions over what it read: which problem stops it, what the plan
//! is, whether the Secret needs writing, what the metrics keep and when to look again. Pure (key
//! generation aside), so every decision is tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::api::conditions::KeyReason;
use crate::api::{
    IMPORT_CONSENT_ANNOTATION, JwksPublication, KeyState, KeyStatus, MANAGED_BY_LABEL, MANAGER,
    ROTATE_ANNOTATION, SigningKey, SigningKeyStatus, revoked_kids,
};
use crate::lifecycle::{
    Change, Policy, PublicationFacts, RotationInput, RotationPlan, later, plan_rotation, selects,
};

use super::super::metrics::KeyObservation;
use super::mint::{KeyMint, import_failed};
use super::report::Problem;
use super::stored::{self, Recovered};

/// While a problem only the user can fix persists (an unreadable import source, a Secret that
/// belongs to someone else), look again this often: those sources are not watched.
pub const PROBLEM_RETRY: Duration = Duration::from_secs(10);

/// The longest requeue: every SigningKey is looked at again at least hourly (the runtime's timer
/// wheel refuses delays beyond about two years, a clock may be corrected meanwhile, and not
/// every change to a Secret is watched).
pub const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// The problem of a SigningKey in a namespace whose Secrets this operator may not touch.
pub fn namespace_problem(allowed: Option<&BTreeSet<String>>, namespace: &str) -> Option<Problem> {
    let allowed = allowed.filter(|allowed| !allowed.contains(namespace))?;
    Some(Problem {
        reason: KeyReason::SecretsNotAllowed,
        message: format!(
            "this operator may not manage Secrets in namespace {namespace} (it is limited to: {}); ask its administrator to add the namespace to the chart's secretNamespaces",
            allowed.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

/// A Secret of that name that this SigningKey does not control is never touched.
pub fn ownership_problem(key: &SigningKey, secret: Option<&Secret>) -> Option<Problem> {
    let secret = secret?;
    let uid = key.meta().uid.as_deref();
    let controller = secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true));
    let ours = match controller {
        Some(owner) => Some(owner.uid.as_str()) == uid,
        // A Secret of ours that lost its owner reference is adopted only with proof that it
        // was made for this SigningKey (its UID in the lifecycle): labels and annotations can be
        // forged by anyone who may create Secrets, the UID cannot be known in advance.
        None => {
            secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
                && stored::made_for(secret, key)
        }
    };
    (!ours).then(|| Problem {
        reason: KeyReason::SecretConflict,
        message: format!(
            "Secret {} exists and is not managed by this SigningKey; set spec.secretName to another name or delete that Secret",
            secret.name_any()
        ),
    })
}

/// The import source's PEM, if its Secret consents to `signing_key` reading it: being allowed to
/// create a SigningKey must not be a way to copy a key one may not read (an ingress's
/// `tls.key`, say). The Secret's owner opts in with [`IMPORT_CONSENT_ANNOTATION`].
pub fn import_pem(
    source: &crate::api::ImportFrom,
    secret: Option<Secret>,
    signing_key: &str,
) -> Result<Vec<u8>, Problem> {
    let name = format!("Secret {}", source.secret_name);
    let secret = secret.ok_or_else(|| import_failed(&name, "the Secret does not exist".into()))?;
    let consents = secret
        .annotations()
        .get(IMPORT_CONSENT_ANNOTATION)
        .is_some_and(|names| names.split(',').any(|n| n.trim() == signing_key));
    if !consents {
        return Err(import_failed(
            &name,
            format!(
                "the Secret does not consent: annotate it with {IMPORT_CONSENT_ANNOTATION}={signing_key} to let this SigningKey import its key"
            ),
        ));
    }
    // Which data keys the Secret has is not said: only its readers may know.
    let data = secret.data.unwrap_or_default();
    data.get(&source.key)
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| import_failed(&name, format!("it has no data key {:?}", source.key)))
}

/// Facts from every publication in `publications` that selects `key`: since when it has served
/// each kid.
pub fn publication_facts<'a>(
    publications: impl IntoIterator<Item = &'a JwksPublication>,
    key: &SigningKey,
) -> Vec<PublicationFacts> {
    publications
        .into_iter()
        .filter(|p| selects(p, key))
        .map(|p| PublicationFacts {
            name: p.name_any(),
            served_since: p
                .status
                .iter()
                .flat_map(|s| &s.keys)
                .map(|k| (k.kid.clone(), k.published_at.0))
                .collect(),
        })
        .collect()
}

/// Slims a SigningKey for the controller's cache, which only triggers reconciles, names keys
/// and tells [`woken_by`] which keys wait for publications: every reconcile reads its key
/// afresh. Of the status only the pending key (kid, state, creation) and `nextRotationAt`
/// stay; managedFields, public JWKs and conditions were most of the memory of 1,000 keys.
pub fn slim(key: &mut SigningKey) {
    key.managed_fields_mut().clear();
    key.status = key.status.take().and_then(|status| {
        let pending: Vec<KeyStatus> = status
            .keys
            .into_iter()
            .filter(|k| k.state == KeyState::Pending)
            .map(|k| KeyStatus {
                public_jwk: Default::default(),
                ..k
            })
            .collect();
        (!pending.is_empty()).then(|| SigningKeyStatus {
            keys: pending,
            next_rotation_at: status.next_rotation_at,
            ..SigningKeyStatus::default()
        })
    });
}

/// Whether a change of `publication` can change what planning `key` decides. Publications take
/// part in one decision only, the activation of a pending key, so only keys with one are woken:
/// - by every publication of their namespace while its spec change is not yet reported
///   (`observedGeneration` behind): a new selector may have released a key that waited for it;
/// - by a publication that selects them and does not serve the pending kid: its serving it, or
///   its deletion, lets the key go on;
/// - by a publication that serves the pending kid since an instant that moves the handover
///   (`publishedAt` + prePublish) past the status's `nextRotationAt`, which the key then
///   reports. Once reported, that publication's further writes (other keys it adds) wake the
///   key no more: it waits out prePublish asleep, and wakes at `nextRotationAt` by itself.
///   (Deleting such a publication could only bring the handover forward: the key keeps the
///   later time it reported.)
///
/// Creating 1,000 keys wakes none; rotating them wakes each about once per publication.
pub fn woken_by(publication: &JwksPublication, key: &SigningKey) -> bool {
    let Some(status) = key.status.as_ref() else {
        return false;
    };
    let Some(pending) = status.keys.iter().find(|k| k.state == KeyState::Pending) else {
        return false;
    };
    let reported = publication
        .status
        .as_ref()
        .and_then(|s| s.observed_generation);
    let settled = reported.is_some() && reported == publication.metadata.generation;
    if !settled {
        return publication.namespace() == key.namespace();
    }
    if !selects(publication, key) {
        return false;
    }
    let served_since = publication
        .status
        .iter()
        .flat_map(|s| &s.keys)
        .find(|k| k.kid == pending.kid)
        .map(|k| k.published_at.0);
    let (Some(since), Some(handover)) = (served_since, status.next_rotation_at.as_ref()) else {
        return true;
    };
    // A spec the policy refuses is reported by the reconcile: wake it.
    Policy::from_spec(&key.spec)
        .map_or(true, |policy| later(since, policy.pre_publish) > handover.0)
}

/// What planning needs besides the SigningKey and the ring recovered from its Secret.
pub struct Observed<'a> {
    pub policy: &'a Policy,
    pub publications: &'a [PublicationFacts],
    /// The import source's PEM (or why it could not be read), when the ring needs it.
    pub import: Option<Result<Vec<u8>, Problem>>,
    pub now: Timestamp,
    pub clock_in_sync: bool,
}

/// The plan for `key`, and the recovered key material with every key minted for it held.
pub fn plan(
    key: &SigningKey,
    mut recovered: Recovered,
    observed: Observed<'_>,
) -> Result<(RotationPlan, Recovered), Problem> {
    let revoke = revoked_kids(key);
    let mut mint = KeyMint {
        certificate: key.spec.certificate.as_ref(),
        import: observed.import,
        import_source: import_source(key),
        now: observed.now.into(),
        minted: BTreeMap::new(),
    };
    let input = RotationInput {
        policy: observed.policy,
        ring: &recovered.ring,
        publications: observed.publications,
        // The planner compares the value with the one it handled last: no parsing here.
        rotate_request: key.annotations().get(ROTATE_ANNOTATION).map(String::as_str),
        revoke: &revoke,
        now: observed.now,
        clock_in_sync: observed.clock_in_sync,
    };
    let plan = plan_rotation(input, |source, spec| mint.mint(source, spec))?;
    recovered.hold(mint.minted);
    Ok((plan, recovered))
}

/// How a failed import names its source.
fn import_source(key: &SigningKey) -> String {
    let namespace = key.namespace().unwrap_or_default();
    key.spec
        .import_from
        .as_ref()
        .map(|s| format!("Secret {}/{} key {:?}", namespace, s.secret_name, s.key))
        .unwrap_or_default()
}

/// Whether the observed Secret already carries everything the desired one sets.
pub fn secret_matches(observed: &Secret, desired: &Secret) -> bool {
    let contains = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    observed.data == desired.data
        && observed.type_ == desired.type_
        && contains(&observed.metadata.labels, &desired.metadata.labels)
        && contains(
            &observed.metadata.annotations,
            &desired.metadata.annotations,
        )
        && desired
            .owner_references()
            .iter()
            .all(|r| observed.owner_references().contains(r))
}

/// What the metrics keep of a plan: rotations are activations of keys that were pending (not the
/// first key, not a replacement for a revoked or lost one).
pub fn observe(plan: &RotationPlan) -> KeyObservation {
    let generated_now = |kid: &str| {
        plan.changes
            .iter()
            .any(|c| matches!(c, Change::Generated { kid: k, .. } if k == kid))
    };
    let count =
        |wanted: &dyn Fn(&Change) -> bool| plan.changes.iter().filter(|c| wanted(c)).count() as u64;
    KeyObservation {
        activated_at: plan.ring.active().and_then(|k| k.activated_at),
        next_rotation_at: plan.next_rotation_at,
        blocked: plan.blocked.is_some(),
        rotations: count(&|c| matches!(c, Change::Activated { kid } if !generated_now(kid))),
        revocations: count(&|c| matches!(c, Change::Revoked { .. })),
    }
}

/// Requeue exactly when the next transition is due, and at least every [`LONGEST_SLEEP`]: a
/// change that no watch maps back to this SigningKey (its Secret taken over by another
/// controller, say) is then found within the hour.
pub fn wake_up(plan: &RotationPlan, now: Timestamp) -> Action {
    if plan.held_for_clock {
        return Action::requeue(PROBLEM_RETRY);
    }
    let delay = plan.wake_at.map_or(LONGEST_SLEEP, |at| {
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
    });
    Action::requeue(delay.min(LONGEST_SLEEP))
}
