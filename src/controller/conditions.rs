//! Conditions as a reconcile decides them: typed type, status and reason (the vocabulary of
//! [`crate::api::conditions`]), turned into Kubernetes conditions in one place.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{ConditionStatus, Term};

/// One condition as decided: which, whether it holds, why, and the words for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict<T, R> {
    pub type_: T,
    pub status: ConditionStatus,
    pub reason: R,
    pub message: String,
}

impl<T: Term, R: Term> Verdict<T, R> {
    pub fn new(type_: T, status: ConditionStatus, reason: R, message: impl Into<String>) -> Self {
        Verdict {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// The condition for this generation; its `lastTransitionTime` is kept from `previous` when
    /// the status did not change, as Kubernetes conventions ask.
    pub fn into_condition(
        self,
        previous: &[Condition],
        generation: Option<i64>,
        now: Timestamp,
    ) -> Condition {
        let transition = find(previous, self.type_)
            .filter(|c| c.status == self.status.as_str())
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: self.type_.as_str().into(),
            status: self.status.as_str().into(),
            reason: self.reason.as_str().into(),
            message: bounded(self.message, MAX_MESSAGE_BYTES),
            observed_generation: generation,
            last_transition_time: transition,
        }
    }
}

/// The condition of type `type_` among `conditions`.
pub fn find<T: Term>(conditions: &[Condition], type_: T) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether `condition` says `status` for `reason`.
pub fn says<R: Term>(condition: &Condition, status: ConditionStatus, reason: R) -> bool {
    condition.status == status.as_str() && condition.reason == reason.as_str()
}

/// The reason of a stored condition, when it is one of the vocabulary's.
pub fn reason_of<R: Term>(condition: &Condition) -> Option<R> {
    R::parse(&condition.reason)
}

/// Condition messages and event notes are cut at this many bytes: they are read by far more
/// people than the objects they describe, and an event note may not exceed 1 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// `text`, cut at a character boundary to at most `max` bytes (with `…` when cut).
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{KeyCondition, KeyReason};
    use k8s_openapi::jiff::SignedDuration;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn ready(status: ConditionStatus) -> Verdict<KeyCondition, KeyReason> {
        Verdict::new(KeyCondition::Ready, status, KeyReason::KeyActive, "signs")
    }

    #[test]
    fn a_condition_carries_the_spellings_and_the_generation() {
        let condition = ready(ConditionStatus::True).into_condition(&[], Some(3), t(0));
        assert_eq!(
            (condition.type_.as_str(), condition.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(condition.reason, "KeyActive");
        assert_eq!(condition.observed_generation, Some(3));
        assert_eq!(condition.last_transition_time, Time(t(0)));
        assert!(says(
            &condition,
            ConditionStatus::True,
            KeyReason::KeyActive
        ));
        assert!(!says(
            &condition,
            ConditionStatus::False,
            KeyReason::KeyActive
        ));
        assert_eq!(reason_of(&condition), Some(KeyReason::KeyActive));
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_does() {
        let first = ready(ConditionStatus::True).into_condition(&[], Some(1), t(0));
        let later = t(0) + SignedDuration::from_secs(60);
        let same = ready(ConditionStatus::True).into_condition(
            std::slice::from_ref(&first),
            Some(2),
            later,
        );
        assert_eq!(same.last_transition_time, Time(t(0)));
        let flipped = ready(ConditionStatus::False).into_condition(&[first], Some(2), later);
        assert_eq!(flipped.last_transition_time, Time(later));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = bounded(text, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short".into(), 10), "short");
    }
}
