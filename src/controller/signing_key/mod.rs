//! The SigningKey controller: read (the SigningKey, its Secret, the publications that select
//! it) → plan ([`plan_rotation`]) → apply (Secret first, then status) → report (events).

#[cfg(test)]
mod hostile_tests;
mod mint;
mod report;
mod stored;

pub use stored::{ALG, KEY_JWK, KEY_PEM, KEYRING, KID, LIFECYCLE_ANNOTATION, SIGNING_KEY_LABEL};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{
    IMPORT_CONSENT_ANNOTATION, JwksPublication, MANAGED_BY_LABEL, MANAGER, ROTATE_ANNOTATION,
    SigningKey, revoked_kids,
};
use crate::lifecycle::{
    Change, Policy, PublicationFacts, RotationInput, RotationPlan, plan_revocation, plan_rotation,
    selects,
};

use super::apply::{describe, write_status};
use super::metrics::{KeyObservation, ObjectLabels};
use super::{Context, Error, FIELD_MANAGER, Scope};
use mint::{KeyMint, import_failed};
use report::{Outcome, Problem, build_events, build_status};

pub const CONTROLLER: &str = "signingkey";

/// While a problem only the user can fix persists (an unreadable import source, a Secret that
/// belongs to someone else), look again this often: those sources are not watched.
const PROBLEM_RETRY: Duration = Duration::from_secs(10);

/// The longest requeue: every SigningKey is looked at again at least hourly (the runtime's timer
/// wheel refuses delays beyond about two years, a clock may be corrected meanwhile, and not
/// every change to a Secret is watched).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// The controller: SigningKeys, their Secrets (metadata only, so private bytes are never
/// cached) and every JwksPublication (a publication serving a kid can unblock an activation).
pub fn controller(
    client: kube::Client,
    scope: &Scope,
    secret_namespaces: Option<&BTreeSet<String>>,
) -> Controller<SigningKey> {
    let keys: Api<SigningKey> = scope.api(client.clone());
    let publications: Api<JwksPublication> = scope.api(client.clone());
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    // With Secret access narrowed to some namespaces, a cluster-wide watch would be forbidden:
    // watch each allowed namespace instead.
    let secret_apis: Vec<Api<PartialObjectMeta<Secret>>> = match secret_namespaces {
        Some(names) => names
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
        None => vec![scope.api(client)],
    };
    let mut controller = Controller::new(keys, watcher::Config::default());
    let store = controller.store();
    for secrets in secret_apis {
        controller = controller.owns(secrets, owned.clone());
    }
    controller.watches(
        publications,
        watcher::Config::default(),
        move |publication| {
            // Every key of the namespace, not only the selected ones: a selector edit can
            // release a key that is waiting for this publication.
            store
                .state()
                .into_iter()
                .filter(|key| key.namespace() == publication.namespace())
                .map(|key| ObjectRef::from_obj(&*key))
                .collect::<Vec<_>>()
        },
    )
}

pub async fn reconcile(key: Arc<SigningKey>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = key
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(key.name_any()))?;
    let client = &context.client;
    let labels = ObjectLabels {
        namespace: namespace.clone(),
        name: key.name_any(),
    };
    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    // The cached copy may lag: G1 and the status precondition need the current object.
    let Some(key) = keys.get_opt(&key.name_any()).await? else {
        context.metrics.forget(&labels);
        return Ok(Action::await_change());
    };
    if key.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = now();
    if let Some(allowed) = &context.secret_namespaces
        && !allowed.contains(&namespace)
    {
        let problem = Problem {
            reason: "SecretsNotAllowed",
            message: format!(
                "this operator may not manage Secrets in namespace {namespace} (it is limited to: {}); ask its administrator to add the namespace to the chart's secretNamespaces",
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        return report_problem(&context, &keys, &key, None, problem, now).await;
    }
    let secret_name = stored::secret_name(&key);
    let secret = secrets.get_opt(&secret_name).await?;
    if let Some(problem) = ownership_problem(&key, secret.as_ref()) {
        return report_problem(&context, &keys, &key, secret.as_ref(), problem, now).await;
    }
    let mut recovered = stored::recover(secret.as_ref(), key.status.as_ref());
    let policy = match Policy::from_spec(&key.spec) {
        Ok(policy) => policy,
        Err(e) => {
            let problem = Problem {
                reason: "InvalidSpec",
                message: e.to_string(),
            };
            return report_problem(&context, &keys, &key, secret.as_ref(), problem, now).await;
        }
    };
    let publications = publication_facts(client, &namespace, &key).await?;
    let import = match (&key.spec.import_from, recovered.ring.keys.is_empty()) {
        (Some(source), true) => Some(read_import(&secrets, source, &key.name_any()).await),
        _ => None,
    };
    let revoke = revoked_kids(&key);
    let clock = context.clock.read().await?;
    let mut mint = KeyMint {
        certificate: key.spec.certificate.as_ref(),
        import,
        import_source: key
            .spec
            .import_from
            .as_ref()
            .map(|s| format!("Secret {}/{} key {:?}", namespace, s.secret_name, s.key))
            .unwrap_or_default(),
        now: now.into(),
        minted: Default::default(),
    };
    let input = RotationInput {
        policy: &policy,
        ring: &recovered.ring,
        publications: &publications,
        rotate_request: key.annotations().get(ROTATE_ANNOTATION).map(String::as_str),
        revoke: &revoke,
        now,
        clock_in_sync: clock.in_sync(),
    };
    // Generating an RSA key takes up to a second of CPU: keep it off the async workers.
    let planned = tokio::task::block_in_place(|| {
        plan_rotation(input, |source, spec| mint.mint(source, spec))
    });
    let plan = match planned {
        Ok(plan) => plan,
        Err(problem) => {
            return report_problem(&context, &keys, &key, secret.as_ref(), problem, now).await;
        }
    };

    recovered.hold(mint.minted);
    // G4: the private half of every key is stored before any status lists its public half.
    let desired = stored::build_secret(&key, &plan.ring, &recovered.private, &recovered.public)
        .map_err(|error| Error::Encode {
            object: describe(&key),
            error,
        })?;
    write_secret(&secrets, secret.as_ref(), desired).await?;

    let outcome = Outcome {
        key: &key,
        secret_name: secret_name.clone(),
        ring: &plan.ring,
        public: &recovered.public,
        plan: Some(&plan),
        damage: &recovered.damage,
        problem: None,
        now,
        clock_skew: clock.skew,
    };
    write_status(&keys, &key, &build_status(&outcome)).await?;
    publish_events(&context, &key, &outcome).await;
    log_plan(&key, &plan);
    context.metrics.observe_key(labels, observe(&plan));
    Ok(wake_up(&plan))
}

/// Facts from every JwksPublication that selects `key`: since when it has served each kid.
async fn publication_facts(
    client: &kube::Client,
    namespace: &str,
    key: &SigningKey,
) -> Result<Vec<PublicationFacts>, Error> {
    // A fresh list, not a cache: a publication created a moment ago must gate activation too.
    let publications: Api<JwksPublication> = Api::namespaced(client.clone(), namespace);
    let list = publications.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
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
        .collect())
}

/// The import source's PEM, if its Secret consents to this SigningKey reading it: being allowed
/// to create a SigningKey must not be a way to copy a key one may not read (an ingress's
/// `tls.key`, say). The Secret's owner opts in with [`IMPORT_CONSENT_ANNOTATION`].
async fn read_import(
    secrets: &Api<Secret>,
    source: &crate::api::ImportFrom,
    signing_key: &str,
) -> Result<Vec<u8>, Problem> {
    let name = format!("Secret {}", source.secret_name);
    let secret = secrets
        .get_opt(&source.secret_name)
        .await
        .map_err(|e| import_failed(&name, e.to_string()))?
        .ok_or_else(|| import_failed(&name, "the Secret does not exist".into()))?;
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

/// A Secret of that name that this SigningKey does not control is never touched.
fn ownership_problem(key: &SigningKey, secret: Option<&Secret>) -> Option<Problem> {
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
        reason: "SecretConflict",
        message: format!(
            "Secret {} exists and is not managed by this SigningKey; set spec.secretName to another name or delete that Secret",
            secret.name_any()
        ),
    })
}

/// Creates the Secret, or applies the desired one over the version read. Either way the
/// apiserver refuses the write (409) if another writer got there first, so two operators can
/// never both add a key.
async fn write_secret(
    secrets: &Api<Secret>,
    observed: Option<&Secret>,
    mut desired: Secret,
) -> Result<(), Error> {
    let Some(observed) = observed else {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        secrets.create(&params, &desired).await?;
        return Ok(());
    };
    if secret_matches(observed, &desired) {
        return Ok(());
    }
    desired.metadata.resource_version = observed.resource_version();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    secrets
        .patch(&observed.name_any(), &params, &Patch::Apply(&desired))
        .await?;
    Ok(())
}

/// Whether the observed Secret already carries everything the desired one sets.
fn secret_matches(observed: &Secret, desired: &Secret) -> bool {
    let contains = |have: &Option<std::collections::BTreeMap<String, String>>,
                    want: &Option<std::collections::BTreeMap<String, String>>| {
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

async fn publish_events(context: &Context, key: &SigningKey, outcome: &Outcome<'_>) {
    let reference = key.object_ref(&());
    for event in build_events(outcome) {
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(namespace = key.namespace(), name = key.name_any(), reason = event.reason, %error, "cannot publish event");
        }
    }
}

/// Reports a problem that prevents planning; the ring and Secret stay as they are.
async fn report_problem(
    context: &Context,
    keys: &Api<SigningKey>,
    key: &SigningKey,
    secret: Option<&Secret>,
    problem: Problem,
    now: Timestamp,
) -> Result<Action, Error> {
    warn!(
        namespace = key.namespace(),
        name = key.name_any(),
        reason = problem.reason,
        message = problem.message,
        "cannot reconcile"
    );
    let ours = problem.reason != "SecretConflict";
    let recovered = stored::recover(secret.filter(|_| ours), key.status.as_ref());
    // Revocation always wins: even when nothing can be planned, revoked kids leave the Secret
    // (when it is ours) and the status, and with it every JWKS.
    let revocation = plan_revocation(&recovered.ring, &revoked_kids(key));
    if ours
        && let Some(secret) = secret
        && !revocation.changes.is_empty()
    {
        let desired =
            stored::build_secret(key, &revocation.ring, &recovered.private, &recovered.public)
                .map_err(|error| Error::Encode {
                    object: describe(key),
                    error,
                })?;
        let secrets = Api::namespaced(
            context.client.clone(),
            &secret.namespace().unwrap_or_default(),
        );
        write_secret(&secrets, Some(secret), desired).await?;
    }
    let outcome = Outcome {
        key,
        secret_name: stored::secret_name(key),
        ring: &revocation.ring,
        public: &recovered.public,
        plan: Some(&revocation).filter(|r| !r.changes.is_empty()),
        damage: &[],
        problem: Some(&problem),
        now,
        clock_skew: SignedDuration::ZERO,
    };
    write_status(keys, key, &build_status(&outcome)).await?;
    publish_events(context, key, &outcome).await;
    Ok(Action::requeue(PROBLEM_RETRY))
}

/// What the metrics keep of a plan: rotations are activations of keys that were pending (not the
/// first key, not a replacement for a revoked or lost one).
fn observe(plan: &RotationPlan) -> KeyObservation {
    let generated_now = |kid: &str| {
        plan.changes
            .iter()
            .any(|c| matches!(c, Change::Generated { kid: k, .. } if k == kid))
    };
    let count =
        |wanted: fn(&Change) -> bool| plan.changes.iter().filter(|c| wanted(c)).count() as u64;
    KeyObservation {
        activated_at: plan.ring.active().and_then(|k| k.activated_at),
        next_rotation_at: plan.next_rotation_at,
        blocked: plan.blocked.is_some(),
        rotations: plan
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Activated { kid } if !generated_now(kid)))
            .count() as u64,
        revocations: count(|c| matches!(c, Change::Revoked { .. })),
    }
}

fn log_plan(key: &SigningKey, plan: &RotationPlan) {
    for change in &plan.changes {
        info!(namespace = key.namespace(), name = key.name_any(), kid = change.kid(), change = ?change, "key ring changed");
    }
}

/// Requeue exactly when the next transition is due, and at least every [`LONGEST_SLEEP`]: a
/// change that no watch maps back to this SigningKey (its Secret taken over by another
/// controller, say) is then found within the hour.
fn wake_up(plan: &RotationPlan) -> Action {
    if plan.held_for_clock {
        return Action::requeue(PROBLEM_RETRY);
    }
    // From the clock now, not from the start of this reconcile: its writes took time.
    let delay = plan.wake_at.map_or(LONGEST_SLEEP, |at| {
        Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
    });
    Action::requeue(delay.min(LONGEST_SLEEP))
}

/// Now, to the microsecond: the precision the status and the lifecycle record keep, so a
/// timestamp reads back exactly as planned.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}
