//! What the spec asks of the ring: the shape of the next key and the rotation timings.

use k8s_openapi::jiff::SignedDuration;

use crate::api::{DurationError, GoDuration, RotationSpec, SigningKeySpec};
use crate::jose::{self, KeySpec};

/// The spec, resolved into the terms the planner works in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The shape every new key gets.
    pub key_spec: KeySpec,
    /// Whether `keySize`/`curve` were set: only then does an active key of another size or
    /// curve (an imported one, say) get rotated out. Another algorithm always does.
    pub explicit_shape: bool,
    /// Absent: manual rotation only.
    pub interval: Option<SignedDuration>,
    pub pre_publish: SignedDuration,
    pub grace_period: SignedDuration,
    /// The first key is adopted from `spec.importFrom` instead of generated.
    pub import: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("spec.keySize {0} is not a supported RSA key size")]
    KeySize(i32),
    #[error("spec: {0}")]
    Key(#[from] jose::Error),
    #[error("spec.rotation.interval must be longer than prePublish")]
    IntervalNotAfterPrePublish,
    #[error("spec.rotation.{field}: {error}")]
    Duration {
        field: &'static str,
        error: DurationError,
    },
}

impl Policy {
    /// Admission already refuses inconsistent specs; this still checks, so that a spec stored
    /// before a schema change yields an error rather than a wrong key.
    pub fn from_spec(spec: &SigningKeySpec) -> Result<Policy, PolicyError> {
        let key_size = spec
            .key_size
            .map(|bits| u32::try_from(bits).map_err(|_| PolicyError::KeySize(bits)))
            .transpose()?;
        let key_spec = KeySpec::new(spec.algorithm.into(), key_size, spec.curve.map(Into::into))?;
        let rotation = spec.rotation();
        let interval = rotation
            .interval
            .as_ref()
            .map(|i| duration("interval", i, RotationSpec::MAX_INTERVAL))
            .transpose()?;
        let pre_publish = duration(
            "prePublish",
            &rotation.pre_publish,
            RotationSpec::MAX_PRE_PUBLISH,
        )?;
        let grace_period = duration(
            "gracePeriod",
            &rotation.grace_period,
            RotationSpec::MAX_GRACE_PERIOD,
        )?;
        if interval.is_some_and(|i| i <= pre_publish) {
            return Err(PolicyError::IntervalNotAfterPrePublish);
        }
        Ok(Policy {
            key_spec,
            interval,
            pre_publish,
            grace_period,
            explicit_shape: spec.key_size.is_some() || spec.curve.is_some(),
            import: spec.import_from.is_some(),
        })
    }

    /// Whether a key of shape `spec` may go on signing under this policy.
    pub fn accepts(&self, spec: KeySpec) -> bool {
        spec.algorithm == self.key_spec.algorithm
            && (!self.explicit_shape || spec.kind == self.key_spec.kind)
    }
}

/// A duration field within its bound (the schema's, checked again for objects stored before it).
fn duration(
    field: &'static str,
    value: &GoDuration,
    max: std::time::Duration,
) -> Result<SignedDuration, PolicyError> {
    let error = |error| PolicyError::Duration { field, error };
    let parsed = value.parse_at_most(max).map_err(error)?;
    // Within the bound, the conversion cannot fail: every bound is far below SignedDuration::MAX.
    Ok(SignedDuration::try_from(parsed).unwrap_or(SignedDuration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::KeyKind;

    fn spec(yaml: &str) -> SigningKeySpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn rotation_defaults_apply_when_rotation_is_absent() {
        let policy = Policy::from_spec(&spec("algorithm: ES256")).unwrap();
        assert_eq!(policy.interval, None);
        assert_eq!(policy.pre_publish, SignedDuration::from_hours(1));
        assert_eq!(policy.grace_period, SignedDuration::from_hours(24));
        assert!(!policy.import);
    }

    #[test]
    fn key_parameters_resolve_to_the_key_shape() {
        let policy = Policy::from_spec(&spec(
            "{algorithm: PS384, keySize: 3072, rotation: {interval: 90m, prePublish: 10m, gracePeriod: 2h}}",
        ))
        .unwrap();
        assert_eq!(policy.key_spec.kind, KeyKind::Rsa { bits: 3072 });
        assert!(policy.explicit_shape);
        assert_eq!(policy.interval, Some(SignedDuration::from_mins(90)));
        assert_eq!(policy.pre_publish, SignedDuration::from_mins(10));
        assert_eq!(policy.grace_period, SignedDuration::from_hours(2));
        let ecdh = Policy::from_spec(&spec("{algorithm: ECDH-ES+A256KW, curve: P-521}")).unwrap();
        assert_eq!(ecdh.key_spec.kind, KeyKind::Ec(jose::Curve::P521));
    }

    #[test]
    fn another_key_size_is_accepted_unless_the_spec_names_one() {
        let rsa = |bits| KeySpec {
            algorithm: jose::Algorithm::Rs256,
            kind: KeyKind::Rsa { bits },
        };
        let implicit = Policy::from_spec(&spec("algorithm: RS256")).unwrap();
        assert!(
            implicit.accepts(rsa(4096)),
            "an imported 4096-bit key keeps signing"
        );
        let explicit = Policy::from_spec(&spec("{algorithm: RS256, keySize: 2048}")).unwrap();
        assert!(!explicit.accepts(rsa(4096)));
        assert!(explicit.accepts(rsa(2048)));
        let es = KeySpec::new(jose::Algorithm::Es256, None, None).unwrap();
        assert!(!implicit.accepts(es), "another algorithm always rotates");
    }

    #[test]
    fn absurd_durations_that_bypassed_admission_are_refused_with_the_field() {
        let cases = [
            (
                "{interval: 720h, prePublish: 1h, gracePeriod: 99999999999999999999h}",
                "spec.rotation.gracePeriod: \"99999999999999999999h\" is longer than any duration can be (about 292 years)",
            ),
            (
                "{interval: 720h, gracePeriod: 8761h}",
                "spec.rotation.gracePeriod: \"8761h\" is longer than the 8760h this field allows",
            ),
            (
                "{interval: 26281h}",
                "spec.rotation.interval: \"26281h\" is longer than the 26280h this field allows",
            ),
            (
                "{interval: 9000h, prePublish: 2161h}",
                "spec.rotation.prePublish: \"2161h\" is longer than the 2160h this field allows",
            ),
            (
                "{interval: 1d}",
                "spec.rotation.interval: \"1d\" is not a duration in Go syntax (e.g. 90m, 1h30m, 720h)",
            ),
            (
                "{interval: 1h, prePublish: 1h}",
                "spec.rotation.interval must be longer than prePublish",
            ),
        ];
        for (rotation, message) in cases {
            let error = Policy::from_spec(&spec(&format!(
                "{{algorithm: ES256, rotation: {rotation}}}"
            )))
            .unwrap_err();
            assert_eq!(error.to_string(), message, "{rotation}");
        }
    }

    #[test]
    fn inconsistent_parameters_that_bypassed_admission_are_refused() {
        let error = Policy::from_spec(&spec("{algorithm: ES256, keySize: 2048}")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec: a key size applies to RSA algorithms only, not ES256"
        );
        assert_eq!(
            Policy::from_spec(&spec("{algorithm: RS256, keySize: -1}")).unwrap_err(),
            PolicyError::KeySize(-1)
        );
    }
}
