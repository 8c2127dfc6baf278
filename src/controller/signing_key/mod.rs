//! The SigningKey controller: read (the SigningKey, its Secret, the publications that select
//! it) → decide ([`decide`], pure) → apply (Secret first, then status) → report (events).

mod decide;
#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod hostile_tests;
mod mint;
#[cfg(test)]
mod mint_tests;
mod report;
#[cfg(test)]
mod report_tests;
mod stored;
#[cfg(test)]
mod stored_tests;

pub use stored::{
    ALG, KEY_JWK, KEY_PEM, KEYRING, KID, LIFECYCLE_ANNOTATION, MAX_TOKEN_LIFETIME,
    SIGNING_KEY_LABEL,
};

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::conditions::{KeyReason, Term};
use crate::api::{JwksPublication, MANAGED_BY_LABEL, MANAGER, SigningKey, revoked_kids};
use crate::lifecycle::{Policy, PublicationFacts, RotationPlan, activation_due, plan_revocation};

use super::apply::{describe, write_status};
use super::clock::ClockReading;
use super::metrics::ObjectLabels;
use super::{Context, During, Error, FIELD_MANAGER, Scope, cache};
use decide::{Observed, PROBLEM_RETRY};
use mint::import_failed;
use report::{Outcome, Problem, build_events, build_status};
use stored::Recovered;

pub const CONTROLLER: &str = "signingkey";

/// SigningKeys reconciled at once. Unbounded, 1,000 keys created together meant 1,000 reconciles
/// in flight, each holding its reads (a list of the namespace's publications among them): most
/// of the operator's memory. A few keep the apiserver busy.
const CONCURRENCY: u16 = 16;

/// The controller: SigningKeys, their Secrets (metadata only, so private bytes are never
/// cached) and every JwksPublication (a publication serving a kid can unblock an activation).
/// Returns the controller and its cache of publications, which planning reads.
pub fn controller(
    client: kube::Client,
    scope: &Scope,
    secret_namespaces: Option<&BTreeSet<String>>,
) -> (Controller<SigningKey>, Store<JwksPublication>) {
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
    let (store, writer) = reflector::store();
    let triggers = reflector(
        writer,
        watcher::watcher(keys, watcher::Config::default()).modify(decide::slim),
    )
    .applied_objects();
    let mut controller = Controller::for_stream(triggers, store.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    for secrets in secret_apis {
        controller = controller.owns(secrets, owned.clone());
    }
    let (publications_cache, publication_changes) = cache::watch(publications);
    let controller = controller.watches_stream(publication_changes, move |publication| {
        store
            .state_filter(|key| decide::woken_by(&publication, key))
            .iter()
            .map(|key| ObjectRef::from_obj(&**key))
            .collect::<Vec<_>>()
    });
    (controller, publications_cache)
}

/// read (the SigningKey, its Secret, what planning needs) → decide ([`decide::plan`]) → apply
/// (Secret first, then status) → report (events, logs, metrics).
pub async fn reconcile(key: Arc<SigningKey>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = key
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(key.name_any()))?;
    let shell = Shell::new(&context, &namespace);
    let labels = ObjectLabels {
        namespace: namespace.clone(),
        name: key.name_any(),
    };
    // The cached copy may lag: G1 and the status precondition need the current object.
    let current = shell.keys.get_opt(&key.name_any()).await;
    let Some(key) = current.during("read", describe(&*key))? else {
        context.metrics.forget_key(&labels);
        return Ok(Action::await_change());
    };
    if key.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = now();
    let secret = match shell.read_secret(&key).await? {
        Ok(secret) => secret,
        Err(problem) => return shell.report_problem(&key, None, problem, now).await,
    };
    let (plan, recovered, clock) = match shell.plan(&key, secret.as_ref(), now).await? {
        Ok(planned) => planned,
        Err(problem) => {
            return shell
                .report_problem(&key, secret.as_ref(), problem, now)
                .await;
        }
    };
    // G4: the private half of every key is stored before any status lists its public half.
    shell
        .store(&key, secret.as_ref(), &plan, &recovered)
        .await?;
    let outcome = Outcome {
        key: &key,
        secret_name: key.secret_name(),
        ring: &plan.ring,
        public: &recovered.public,
        plan: Some(&plan),
        damage: &recovered.damage,
        problem: None,
        now,
        clock_skew: clock.skew,
    };
    shell.report(&key, &outcome).await?;
    for change in &plan.changes {
        info!(kid = change.kid(), change = ?change, "key ring changed");
    }
    context.metrics.observe_key(labels, decide::observe(&plan));
    // From the clock now, not from the start of this reconcile: its writes took time.
    Ok(decide::wake_up(&plan, Timestamp::now()))
}

/// An API failure fails the reconcile (retried with backoff); a [`Problem`] is the user's to
/// fix, and is reported and looked at again after [`PROBLEM_RETRY`].
type Attempt<T> = Result<Result<T, Problem>, Error>;

/// A reconcile's reach into one namespace of the cluster.
struct Shell<'a> {
    context: &'a Context,
    namespace: &'a str,
    keys: Api<SigningKey>,
    secrets: Api<Secret>,
}

impl<'a> Shell<'a> {
    fn new(context: &'a Context, namespace: &'a str) -> Self {
        Shell {
            context,
            namespace,
            keys: Api::namespaced(context.client.clone(), namespace),
            secrets: Api::namespaced(context.client.clone(), namespace),
        }
    }

    /// The SigningKey's Secret, unless the operator may not touch it.
    async fn read_secret(&self, key: &SigningKey) -> Attempt<Option<Secret>> {
        let allowed = self.context.secret_namespaces.as_ref();
        if let Some(problem) = decide::namespace_problem(allowed, self.namespace) {
            return Ok(Err(problem));
        }
        let name = key.secret_name();
        let secret = self.secrets.get_opt(&name).await;
        let secret = secret.during("read", format!("Secret {}/{name}", self.namespace))?;
        Ok(match decide::ownership_problem(key, secret.as_ref()) {
            Some(problem) => Err(problem),
            None => Ok(secret),
        })
    }

    /// Reads what planning needs besides the Secret, then plans.
    async fn plan(
        &self,
        key: &SigningKey,
        secret: Option<&Secret>,
        now: Timestamp,
    ) -> Attempt<(RotationPlan, Recovered, ClockReading)> {
        let recovered = stored::recover(secret, key.status.as_ref());
        let policy = match Policy::from_spec(&key.spec) {
            Ok(policy) => policy,
            Err(e) => return Ok(Err(Problem::new(KeyReason::InvalidSpec, e.to_string()))),
        };
        // The cache decides everything but an activation, which G1 decides on a fresh list: a
        // publication created a moment ago may not be in the cache yet, and it gates it too.
        let cached = self.cached_publication_facts(key).await?;
        let publications = match activation_due(&recovered.ring, &cached, &policy, now) {
            true => self.listed_publication_facts(key).await?,
            false => cached,
        };
        let import = match (&key.spec.import_from, recovered.ring.keys.is_empty()) {
            (Some(source), true) => Some(self.read_import(source, &key.name_any()).await),
            _ => None,
        };
        let clock = self.context.clock.read().await?;
        let observed = Observed {
            policy: &policy,
            publications: &publications,
            import,
            now,
            clock_in_sync: clock.in_sync(),
        };
        // Generating an RSA key takes up to a second of CPU: keep it off the async workers.
        let planned = tokio::task::block_in_place(|| decide::plan(key, recovered, observed));
        Ok(planned.map(|(plan, recovered)| (plan, recovered, clock)))
    }

    /// Facts from every JwksPublication of the namespace that selects `key`, from the cache.
    /// Waits for the cache's first full list.
    async fn cached_publication_facts(
        &self,
        key: &SigningKey,
    ) -> Result<Vec<PublicationFacts>, Error> {
        let cache = self.context.publications.filled().await?;
        let in_namespace = cache.state_filter(|p| p.namespace().as_deref() == Some(self.namespace));
        Ok(decide::publication_facts(
            in_namespace.iter().map(|p| &**p),
            key,
        ))
    }

    /// Facts from every JwksPublication that selects `key`, listed afresh.
    async fn listed_publication_facts(
        &self,
        key: &SigningKey,
    ) -> Result<Vec<PublicationFacts>, Error> {
        let publications: Api<JwksPublication> =
            Api::namespaced(self.context.client.clone(), self.namespace);
        let list = publications.list(&ListParams::default()).await;
        let list = list.during("list", format!("JwksPublications in {}", self.namespace))?;
        Ok(decide::publication_facts(&list.items, key))
    }

    /// The import source's PEM, if its Secret can be read and consents.
    async fn read_import(
        &self,
        source: &crate::api::ImportFrom,
        signing_key: &str,
    ) -> Result<Vec<u8>, Problem> {
        // Not an error but a problem: a source the operator cannot read is the user's to fix,
        // and the message users see names the source as they wrote it.
        let secret = self
            .secrets
            .get_opt(&source.secret_name)
            .await
            .map_err(|e| import_failed(&format!("Secret {}", source.secret_name), e.to_string()))?;
        decide::import_pem(source, secret, signing_key)
    }

    /// Writes the Secret for `plan`'s ring over the `observed` one.
    async fn store(
        &self,
        key: &SigningKey,
        observed: Option<&Secret>,
        plan: &RotationPlan,
        recovered: &Recovered,
    ) -> Result<(), Error> {
        let desired = stored::build_secret(key, &plan.ring, &recovered.private, &recovered.public)
            .map_err(|error| Error::Encode {
                object: describe(key),
                error,
            })?;
        self.write_secret(observed, desired).await
    }

    /// Creates the Secret, or applies the desired one over the version read. Either way the
    /// apiserver refuses the write (409) if another writer got there first, so two operators can
    /// never both add a key.
    async fn write_secret(
        &self,
        observed: Option<&Secret>,
        mut desired: Secret,
    ) -> Result<(), Error> {
        let object = describe(&desired);
        let Some(observed) = observed else {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            self.secrets
                .create(&params, &desired)
                .await
                .during("create", object)?;
            return Ok(());
        };
        if decide::secret_matches(observed, &desired) {
            return Ok(());
        }
        desired.metadata.resource_version = observed.resource_version();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&desired);
        let applied = self
            .secrets
            .patch(&observed.name_any(), &params, &patch)
            .await;
        applied.during("apply", object)?;
        Ok(())
    }

    /// The status, then the events: an event never announces what the status does not show.
    async fn report(&self, key: &SigningKey, outcome: &Outcome<'_>) -> Result<(), Error> {
        write_status(&self.keys, key, &build_status(outcome)).await?;
        let reference = key.object_ref(&());
        for event in build_events(outcome) {
            if let Err(error) = self.context.recorder.publish(&event, &reference).await {
                warn!(reason = event.reason, %error, "cannot publish event");
            }
        }
        Ok(())
    }

    /// Reports a problem that prevents planning; the ring and Secret stay as they are but for
    /// revocations. `secret` is the Secret only when it is this SigningKey's to write.
    async fn report_problem(
        &self,
        key: &SigningKey,
        secret: Option<&Secret>,
        problem: Problem,
        now: Timestamp,
    ) -> Result<Action, Error> {
        warn!(
            reason = problem.reason.as_str(),
            message = problem.message,
            "cannot reconcile"
        );
        let recovered = stored::recover(secret, key.status.as_ref());
        // Revocation always wins: even when nothing can be planned, revoked kids leave the Secret
        // (when it is ours) and the status, and with it every JWKS.
        let revocation = plan_revocation(&recovered.ring, &revoked_kids(key));
        if secret.is_some() && !revocation.changes.is_empty() {
            self.store(key, secret, &revocation, &recovered).await?;
        }
        let outcome = Outcome {
            key,
            secret_name: key.secret_name(),
            ring: &revocation.ring,
            public: &recovered.public,
            plan: Some(&revocation).filter(|r| !r.changes.is_empty()),
            damage: &[],
            problem: Some(&problem),
            now,
            clock_skew: SignedDuration::ZERO,
        };
        self.report(key, &outcome).await?;
        Ok(Action::requeue(PROBLEM_RETRY))
    }
}

/// Now, to the microsecond: the precision the status and the lifecycle record keep, so a
/// timestamp reads back exactly as planned.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}
