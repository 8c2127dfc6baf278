//! Publishing `events.k8s.io/v1` Events. Repeats of the same event (same object, type, reason and
//! note) within a few minutes become one Event with a growing `series`, as the Kubernetes event
//! guidelines ask; events that say different things stay separate (kube's own recorder merges
//! by reason alone and keeps the first note, which would hide which key an event is about).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::conditions::{MAX_MESSAGE_BYTES, bounded};

/// How long a repeat joins the series of the event it repeats.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<HashMap<Key, Recent>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    type_: &'static str,
    reason: String,
    note: Option<String>,
    related: Option<String>,
}

struct Recent {
    name: String,
    count: i32,
    last: Timestamp,
}

impl EventRecorder {
    pub fn new(client: Client, controller: String, instance: Option<String>) -> Self {
        EventRecorder {
            client,
            instance: instance.unwrap_or_else(|| controller.clone()),
            controller,
            recent: Mutex::new(HashMap::new()),
        }
    }

    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let type_ = match event.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = Key {
            regarding: regarding.uid.clone().unwrap_or_default(),
            type_,
            reason: event.reason.clone(),
            note: event.note.clone(),
            related: event.secondary.as_ref().and_then(|r| r.field_path.clone()),
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        if let Some((name, count)) = self.repeat_of(&key, now) {
            let series =
                json!({"series": EventSeries { count, last_observed_time: MicroTime(now) }});
            let patched = events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await;
            if patched.is_ok() {
                return Ok(());
            }
            // The event expired or was deleted: start a new one.
        }
        let created = self.new_event(event, type_, regarding, namespace, now);
        events.create(&PostParams::default(), &created).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.recent().insert(
            key,
            Recent {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// A new Event about `regarding`, named after it and the instant (unique per object).
    fn new_event(
        &self,
        event: &Event,
        type_: &'static str,
        regarding: &ObjectReference,
        namespace: String,
        now: Timestamp,
    ) -> K8sEvent {
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone().map(|n| bounded(n, MAX_MESSAGE_BYTES)),
            type_: Some(type_.into()),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }

    /// The name and new count of the recent event `key` repeats, counted as repeated at `now`;
    /// forgets events older than the series window. The lock is held for this bookkeeping only,
    /// never across an API request, so event writes of concurrent reconciles do not queue.
    fn repeat_of(&self, key: &Key, now: Timestamp) -> Option<(String, i32)> {
        let mut recent = self.recent();
        recent.retain(|_, r| {
            Duration::try_from(now.duration_since(r.last)).is_ok_and(|age| age < SERIES_WINDOW)
        });
        let repeat = recent.get_mut(key)?;
        repeat.count += 1;
        repeat.last = now;
        Some((repeat.name.clone(), repeat.count))
    }

    fn recent(&self) -> MutexGuard<'_, HashMap<Key, Recent>> {
        // The map is bookkeeping only: a panic elsewhere while it was held leaves it usable.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}
