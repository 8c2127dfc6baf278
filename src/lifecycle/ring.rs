//! The key ring: every key a SigningKey holds or still publishes, with its lifecycle timestamps.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::KeyState;
use crate::jose::KeySpec;

/// One key of the ring. Its state follows from its timestamps, so it cannot disagree with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingKey {
    pub kid: String,
    pub spec: KeySpec,
    pub created_at: Timestamp,
    pub activated_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
    /// Whether the Secret holds the private half. A key whose private half was lost never signs
    /// again, but its public half stays published until `remove_after` (G2).
    pub held: bool,
}

impl RingKey {
    pub fn state(&self) -> KeyState {
        match (self.activated_at, self.retired_at) {
            (_, Some(_)) => KeyState::Retired,
            (Some(_), None) => KeyState::Active,
            (None, None) => KeyState::Pending,
        }
    }

    pub(super) fn retire(&mut self, now: Timestamp, grace_period: SignedDuration) {
        self.retired_at = Some(now);
        self.remove_after = Some(later(now, grace_period));
    }
}

/// The keys, oldest first, and the last manual rotation request already acted on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    pub keys: Vec<RingKey>,
    /// The value of the rotate annotation the operator has handled, so each new value rotates
    /// exactly once, across restarts and status loss.
    pub rotate_token: Option<String>,
}

impl KeyRing {
    pub fn active(&self) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.state() == KeyState::Active)
    }

    pub fn pending(&self) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.state() == KeyState::Pending)
    }

    pub fn get(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// The most keys one ring holds. A worst-case key (RSA-4096 with a certificate) takes about
/// 5 KiB of `keyring.jwks` and 2.5 KiB of status, so 64 keep the Secret under 400 KiB (the
/// object limit is 1 MiB) and a SigningKey's status under 200 KiB. A schedule that would grow
/// the ring past it (a short interval with a long grace period) waits for a retired key to leave.
pub const MAX_RING_KEYS: usize = 64;

/// `t + d`, saturating at the end of time (a duration this large only comes from a huge spec).
pub fn later(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}
