//! The status vocabulary of both CRDs in one place: condition statuses, types and reasons.
//! Users, dashboards and alerts match on these strings, and the CLI reads them back, so each
//! is written once, here, and everywhere else is a typed value.

/// A closed set of words with their wire spelling (the variant's name).
pub trait Term: Copy + 'static {
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    /// The term spelled `text`, if there is one.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|term| term.as_str() == text)
    }
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$doc])* $variant),+
        }

        impl Term for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant)),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// A condition's `status`.
    ConditionStatus { True, False, Unknown }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

vocabulary! {
    /// The conditions of a SigningKey.
    KeyCondition { Ready, Rotating, Degraded }
}

vocabulary! {
    /// Why a SigningKey's condition is as it is.
    KeyReason {
        // Ready
        KeyActive,
        NoKey,
        // Problems that stop planning (Ready=False and Degraded=True)
        ImportFailed,
        SecretConflict,
        SecretsNotAllowed,
        InvalidSpec,
        KeyGenerationFailed,
        // Rotating
        NotPlanned,
        ClockSkew,
        RotationBlocked,
        KeyRingFull,
        RotationInProgress,
        Scheduled,
        ManualOnly,
        // Degraded
        StatusRebuilt,
        SecretRepaired,
        PrivateKeysLost,
        AsExpected,
    }
}

vocabulary! {
    /// The conditions of a JwksPublication.
    PublicationCondition { Ready, Published, ServerAvailable, Copied }
}

vocabulary! {
    /// Why a JwksPublication's condition is as it is.
    PublicationReason {
        // Ready
        Ready,
        NoKeys,
        ServerUnavailable,
        // Published
        UpToDate,
        PublishedWithWarnings,
        TooLarge,
        ConfigMapConflict,
        InvalidName,
        InvalidSpec,
        // ServerAvailable
        Available,
        Unavailable,
        Disabled,
        ServerConflict,
        // Copied
        CopiesUpToDate,
        CopiesPending,
        CopyConflict,
        CopiesRefused,
        CopiesNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Term + PartialEq + std::fmt::Debug>() {
        for term in T::ALL {
            assert_eq!(T::parse(term.as_str()), Some(*term));
        }
        assert_eq!(T::parse("NotAWord"), None);
    }

    #[test]
    fn every_term_parses_back_from_its_spelling() {
        round_trips::<ConditionStatus>();
        round_trips::<KeyCondition>();
        round_trips::<KeyReason>();
        round_trips::<PublicationCondition>();
        round_trips::<PublicationReason>();
    }

    #[test]
    fn spellings_are_the_variant_names() {
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        assert_eq!(KeyReason::PrivateKeysLost.as_str(), "PrivateKeysLost");
        assert_eq!(
            PublicationCondition::ServerAvailable.to_string(),
            "ServerAvailable"
        );
    }
}
