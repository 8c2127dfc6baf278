//! From the selected SigningKeys to the documents a publication serves.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::api::{JwksPublication, JwksPublicationSpec, RotationSpec, SigningKey, revoked_kids};
use crate::jose::{self, Jwk};
use crate::lifecycle::selects;

use super::{JWKS_PATH, Published, is_jwks_path};

/// The JWK Set and discovery document for `publication`, from the public JWKs in the status of
/// every SigningKey it selects. Only the public members a JWK defines are copied, so nothing
/// else that may sit in a status (let alone a private member) can reach the JWKS (G3).
/// Revocation always wins: a kid the SigningKey's revoke annotation names is left out even while
/// its status still lists it (the SigningKey controller may be unable to plan).
pub fn assemble(publication: &JwksPublication, keys: &[SigningKey]) -> Assembled {
    let mut published: BTreeMap<String, Jwk> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut sources = Vec::new();
    for key in keys.iter().filter(|k| selects(publication, k)) {
        sources.push(key.metadata.name.clone().unwrap_or_default());
        let revoked = revoked_kids(key);
        let statuses = key.status.iter().flat_map(|s| &s.keys);
        for status in statuses.filter(|s| !revoked.contains(&s.kid)) {
            match checked_jwk(&status.public_jwk, &status.kid) {
                Some(jwk) => {
                    published.entry(jwk.kid.clone()).or_insert(jwk);
                }
                None => skipped.push(status.kid.clone()),
            }
        }
    }
    let keys: Vec<&Jwk> = published.values().collect();
    // Canonical: members sorted (the Jwk struct's order), keys sorted by kid, no whitespace.
    let jwks = jose::canonical_json(&json!({ "keys": keys })).unwrap_or_default();
    let jwks_path = jwks_path(publication);
    let discovery = publication
        .spec
        .issuer
        .as_deref()
        .map(|issuer| discovery_document(issuer, &jwks_path, published.values()));
    Assembled {
        published: Published {
            jwks,
            discovery,
            // An invalid value (stored before the schema bounded it) is reported by the
            // controller; the documents still carry a sane lifetime meanwhile.
            max_age_seconds: publication
                .spec
                .cache_max_age
                .parse_at_most(JwksPublicationSpec::MAX_CACHE_MAX_AGE)
                .unwrap_or(JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE)
                .as_secs(),
            jwks_path,
        },
        kids: published.keys().cloned().collect(),
        sources,
        skipped,
    }
}

/// What [`assemble`] produced, and from what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    pub published: Published,
    pub kids: BTreeSet<String>,
    /// The selected SigningKeys, by name.
    pub sources: Vec<String>,
    /// Kids whose status JWK is not a valid public key with that thumbprint kid.
    pub skipped: Vec<String>,
}

fn checked_jwk(value: &serde_json::Map<String, serde_json::Value>, kid: &str) -> Option<Jwk> {
    let jwk: Jwk = serde_json::from_value(value.clone().into()).ok()?;
    let key = jwk.to_public_key().ok()?;
    (jwk.kid == kid && key.to_jwk().kid == kid).then_some(jwk)
}

/// Where the publication's JWK Set is served: `spec.jwksPath`, or the default. A path the schema
/// would refuse (no object carries one unless admission was bypassed) serves at the default
/// rather than somewhere no verifier could reach.
pub fn jwks_path(publication: &JwksPublication) -> String {
    publication
        .spec
        .jwks_path
        .as_deref()
        .filter(|path| is_jwks_path(path))
        .unwrap_or(JWKS_PATH)
        .to_owned()
}

/// The OIDC discovery document (OpenID Connect Discovery 1.0 §3) for a token issuer whose keys
/// are published here at `jwks_path`.
fn discovery_document<'a>(
    issuer: &str,
    jwks_path: &str,
    keys: impl Iterator<Item = &'a Jwk>,
) -> String {
    let issuer = issuer.trim_end_matches('/');
    let algorithms: BTreeSet<&str> = keys
        .filter(|k| k.key_use == "sig")
        .map(|k| k.alg.as_str())
        .collect();
    jose::canonical_json(&json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{jwks_path}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    }))
    .unwrap_or_default()
}

/// The smallest `prePublish` among the selected SigningKeys, if any (a cache lifetime longer
/// than it lets a verifier miss a key that already signs).
pub fn smallest_pre_publish(
    publication: &JwksPublication,
    keys: &[SigningKey],
) -> Option<std::time::Duration> {
    keys.iter()
        .filter(|k| selects(publication, k))
        .map(|k| {
            // A value stored before the schema bounded it counts as the default, as it does
            // for the planner's policy.
            k.spec
                .rotation()
                .pre_publish
                .parse()
                .unwrap_or(RotationSpec::DEFAULT_PRE_PUBLISH)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{Algorithm, KeySpec, PrivateKey};

    fn public_jwk(algorithm: Algorithm) -> serde_json::Map<String, serde_json::Value> {
        let key = PrivateKey::generate(KeySpec::new(algorithm, None, None).unwrap()).unwrap();
        let value = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        value.as_object().unwrap().clone()
    }

    fn signing_key(
        name: &str,
        algorithm: &str,
        label: &str,
        jwks: &[serde_json::Map<String, serde_json::Value>],
    ) -> SigningKey {
        let keys: Vec<serde_json::Value> = jwks
            .iter()
            .map(|jwk| json!({"kid": jwk["kid"], "state": "Active", "createdAt": "2026-11-28T00:00:00Z", "publicJwk": jwk}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "SigningKey",
            "metadata": {"name": name, "namespace": "auth", "labels": {"jwks-operator.io/publication": label}},
            "spec": {"algorithm": algorithm},
            "status": {"keys": keys},
        }))
        .unwrap()
    }

    fn publication(uses: &[&str], issuer: Option<&str>) -> JwksPublication {
        let mut spec = json!({"selector": {"matchLabels": {"jwks-operator.io/publication": "main"}}, "use": uses, "cacheMaxAge": "90s"});
        if let Some(issuer) = issuer {
            spec["issuer"] = issuer.into();
        }
        serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
            "metadata": {"name": "main", "namespace": "auth"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn jwks_is_canonical_sorted_by_kid_and_independent_of_input_order() {
        let a = signing_key(
            "a",
            "ES256",
            "main",
            &[public_jwk(Algorithm::Es256), public_jwk(Algorithm::Es256)],
        );
        let b = signing_key("b", "EdDSA", "main", &[public_jwk(Algorithm::EdDsa)]);
        let one = assemble(&publication(&["sig"], None), &[a.clone(), b.clone()]);
        let two = assemble(&publication(&["sig"], None), &[b, a]);
        assert_eq!(
            one.published, two.published,
            "byte-stable whatever the order of the inputs"
        );
        let set: serde_json::Value = serde_json::from_str(&one.published.jwks).unwrap();
        let kids: Vec<&str> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        let mut sorted = kids.clone();
        sorted.sort();
        assert_eq!(kids, sorted);
        assert_eq!(kids.len(), 3);
        assert!(!one.published.jwks.contains(' ') && !one.published.jwks.contains('\n'));
        assert!(
            jose::lint::lint(
                one.published.jwks.as_bytes(),
                jose::lint::LintOptions {
                    thumbprint_kids: true
                }
            )
            .is_empty()
        );
        assert_eq!(one.published.max_age_seconds, 90);
        assert_eq!(one.published.discovery, None);
    }

    #[test]
    fn only_selected_keys_of_a_listed_use_are_published() {
        let signing = signing_key("s", "ES256", "main", &[public_jwk(Algorithm::Es256)]);
        let encryption = signing_key("e", "ECDH-ES", "main", &[public_jwk(Algorithm::EcdhEs)]);
        let elsewhere = signing_key("x", "ES256", "other", &[public_jwk(Algorithm::Es256)]);
        let keys = [signing.clone(), encryption.clone(), elsewhere];
        let sig_only = assemble(&publication(&["sig"], None), &keys);
        assert_eq!(sig_only.sources, ["s"]);
        assert_eq!(sig_only.kids.len(), 1);
        let both = assemble(&publication(&["sig", "enc"], None), &keys);
        assert_eq!(both.sources, ["s", "e"]);
        assert_eq!(both.kids.len(), 2);
    }

    #[test]
    fn nothing_but_public_members_is_copied_from_a_status() {
        let mut tampered = public_jwk(Algorithm::Es256);
        tampered.insert("d".into(), "c2VjcmV0".into());
        tampered.insert("note".into(), "anything".into());
        let mut wrong_kid = public_jwk(Algorithm::Es256);
        wrong_kid.insert("kid".into(), "not-the-thumbprint".into());
        let key = signing_key("k", "ES256", "main", &[tampered, wrong_kid]);
        let assembled = assemble(&publication(&["sig"], None), &[key]);
        assert!(
            !assembled.published.jwks.contains("\"d\"")
                && !assembled.published.jwks.contains("note")
        );
        assert_eq!(assembled.kids.len(), 1);
        assert_eq!(assembled.skipped, ["not-the-thumbprint"]);
    }

    #[test]
    fn discovery_lists_every_published_signing_algorithm() {
        let keys = [
            signing_key("a", "ES256", "main", &[public_jwk(Algorithm::Es256)]),
            signing_key("b", "RS256", "main", &[public_jwk(Algorithm::Rs256)]),
            signing_key("e", "RSA-OAEP", "main", &[public_jwk(Algorithm::RsaOaep)]),
        ];
        let assembled = assemble(
            &publication(&["sig", "enc"], Some("https://auth.example.com/")),
            &keys,
        );
        let discovery: serde_json::Value =
            serde_json::from_str(assembled.published.discovery.as_deref().unwrap()).unwrap();
        assert_eq!(discovery["issuer"], "https://auth.example.com");
        assert_eq!(
            discovery["jwks_uri"],
            "https://auth.example.com/.well-known/jwks.json"
        );
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            json!(["ES256", "RS256"])
        );
        assert_eq!(discovery["subject_types_supported"], json!(["public"]));
        assert_eq!(discovery["response_types_supported"], json!(["id_token"]));
        assert_eq!(assembled.published.jwks_path, JWKS_PATH);
    }

    #[test]
    fn the_jwks_path_moves_the_served_path_and_the_discovery_jwks_uri() {
        let keys = [signing_key(
            "a",
            "ES256",
            "main",
            &[public_jwk(Algorithm::Es256)],
        )];
        let mut kubernetes_style = publication(&["sig"], Some("https://issuer.example"));
        kubernetes_style.spec.jwks_path = Some("/openid/v1/jwks".into());
        let published = assemble(&kubernetes_style, &keys).published;
        assert_eq!(published.jwks_path, "/openid/v1/jwks");
        let discovery: serde_json::Value =
            serde_json::from_str(published.discovery.as_deref().unwrap()).unwrap();
        assert_eq!(
            discovery["jwks_uri"],
            "https://issuer.example/openid/v1/jwks"
        );
        // A path admission would refuse (stored by bypassing it) serves at the default.
        kubernetes_style.spec.jwks_path = Some("/healthz".into());
        assert_eq!(
            assemble(&kubernetes_style, &keys).published.jwks_path,
            JWKS_PATH
        );
    }

    #[test]
    fn revoked_kids_are_left_out_even_while_a_status_lists_them() {
        let (a, b, c) = (
            public_jwk(Algorithm::Es256),
            public_jwk(Algorithm::Es256),
            public_jwk(Algorithm::EdDsa),
        );
        let kid = |jwk: &serde_json::Map<String, serde_json::Value>| {
            jwk["kid"].as_str().unwrap().to_owned()
        };
        let mut key = signing_key("k", "ES256", "main", &[a.clone(), b.clone()]);
        key.metadata.annotations = Some(
            [(
                crate::api::REVOKE_ANNOTATION.to_string(),
                format!(" {} ,, unknown", kid(&a)),
            )]
            .into(),
        );
        let other = signing_key("o", "EdDSA", "main", std::slice::from_ref(&c));
        let assembled = assemble(&publication(&["sig"], None), &[key, other]);
        assert_eq!(assembled.kids, BTreeSet::from([kid(&b), kid(&c)]));
        assert!(!assembled.published.jwks.contains(&kid(&a)));
        assert!(assembled.skipped.is_empty(), "revoked is not invalid");
    }
}
