//! The CRD's words for algorithms, curves and key uses ([`crate::api`], what users write) in the
//! key engine's terms ([`crate::jose`]): the one place the two vocabularies meet. They stay two
//! types because the API's carry the schema (serde names, schemars) and jose's the behaviour.

use crate::api;
use crate::jose;

impl From<api::Algorithm> for jose::Algorithm {
    fn from(algorithm: api::Algorithm) -> Self {
        use api::Algorithm as A;
        use jose::Algorithm as J;
        match algorithm {
            A::Rs256 => J::Rs256,
            A::Rs384 => J::Rs384,
            A::Rs512 => J::Rs512,
            A::Ps256 => J::Ps256,
            A::Ps384 => J::Ps384,
            A::Ps512 => J::Ps512,
            A::Es256 => J::Es256,
            A::Es384 => J::Es384,
            A::Es512 => J::Es512,
            A::EdDsa => J::EdDsa,
            A::RsaOaep => J::RsaOaep,
            A::RsaOaep256 => J::RsaOaep256,
            A::EcdhEs => J::EcdhEs,
            A::EcdhEsA128kw => J::EcdhEsA128kw,
            A::EcdhEsA256kw => J::EcdhEsA256kw,
        }
    }
}

impl From<api::Curve> for jose::Curve {
    fn from(curve: api::Curve) -> Self {
        match curve {
            api::Curve::P256 => jose::Curve::P256,
            api::Curve::P384 => jose::Curve::P384,
            api::Curve::P521 => jose::Curve::P521,
        }
    }
}

impl From<jose::KeyUse> for api::KeyUse {
    fn from(key_use: jose::KeyUse) -> Self {
        match key_use {
            jose::KeyUse::Sig => api::KeyUse::Sig,
            jose::KeyUse::Enc => api::KeyUse::Enc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's wire name of a value (its serde rename), as users write it.
    fn wire<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn every_api_algorithm_maps_to_the_jose_algorithm_of_the_same_name() {
        for alg in jose::Algorithm::ALL {
            let api: api::Algorithm = serde_json::from_value(alg.name().into()).unwrap();
            assert_eq!(jose::Algorithm::from(api), alg);
            assert_eq!(wire(api), alg.name());
        }
    }

    #[test]
    fn every_api_curve_maps_to_the_jose_curve_of_the_same_name() {
        for curve in [api::Curve::P256, api::Curve::P384, api::Curve::P521] {
            assert_eq!(wire(curve), jose::Curve::from(curve).name());
        }
    }

    #[test]
    fn key_uses_keep_their_rfc_7517_names() {
        for jose_use in [jose::KeyUse::Sig, jose::KeyUse::Enc] {
            assert_eq!(wire(api::KeyUse::from(jose_use)), jose_use.name());
        }
    }
}
