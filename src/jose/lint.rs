//! A JWK Set linter: what a publisher owes its verifiers at the document level (RFC 7517 §4–5,
//! RFC 7518 §6, RFC 7638, RFC 8037, and the verifier libraries' limits): structure, required
//! members, encoding, private or symmetric members, unique kids and key material,
//! alg/kty/crv/use consistency, thumbprint kids, size.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize as _;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Algorithm, KeyKind, public_material, thumbprint};

/// Nimbus, a common Java verifier, refuses JWK Sets larger than this by default.
pub const MAX_DOCUMENT_BYTES: usize = 51_200;

/// Members that make a JWK private or symmetric; none may appear in a published set (G3).
const SECRET_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/// One problem, located by a JSON pointer (RFC 6901) into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub pointer: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LintOptions {
    /// Require every `kid` to be the key's RFC 7638 SHA-256 thumbprint.
    pub thumbprint_kids: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.reason)
    }
}

/// Checks a JWK Set document; an empty result means it is clean.
pub fn lint(document: &[u8], options: LintOptions) -> Vec<Finding> {
    let mut findings = Findings::default();
    if document.len() > MAX_DOCUMENT_BYTES {
        findings.add(
            "",
            format!(
                "the document is {} bytes; keep it at most {MAX_DOCUMENT_BYTES} (Nimbus's limit)",
                document.len()
            ),
        );
    }
    if document.starts_with(&[0xEF, 0xBB, 0xBF]) {
        findings.add(
            "",
            "the document starts with a UTF-8 byte order mark (RFC 8259 §8.1)",
        );
    }
    let text = match std::str::from_utf8(document) {
        Ok(text) => text.trim_start_matches('\u{feff}'),
        Err(_) => {
            findings.add("", "the document is not UTF-8");
            return findings.0;
        }
    };
    let value = match parse_strict(text) {
        Ok(value) => value,
        Err(error) => {
            findings.add("", format!("not valid JSON: {error}"));
            return findings.0;
        }
    };
    let Some(keys) = value.as_object().and_then(|set| set.get("keys")) else {
        let what = if value.get("kty").is_some() {
            "a single JWK"
        } else {
            "not an object with a \"keys\" member"
        };
        findings.add("", format!("not a JWK Set: {what} (RFC 7517 §5)"));
        return findings.0;
    };
    let Some(keys) = keys.as_array() else {
        findings.add("/keys", "\"keys\" is not an array");
        return findings.0;
    };
    if keys.is_empty() {
        findings.add(
            "/keys",
            "the set is empty; every verifier rejects every token",
        );
    }
    let mut kids: HashMap<&str, usize> = HashMap::new();
    let mut thumbprints: HashMap<String, usize> = HashMap::new();
    for (index, key) in keys.iter().enumerate() {
        let at = format!("/keys/{index}");
        let Some(key) = key.as_object() else {
            findings.add(&at, "not a JSON object");
            continue;
        };
        if let Some(kid) = key.get("kid").and_then(Value::as_str)
            && let Some(first) = kids.insert(kid, index)
        {
            findings.add(
                format!("{at}/kid"),
                format!("duplicate kid, also at /keys/{first}; jose fails on any duplicate"),
            );
        }
        if let Some(tp) = lint_key(&at, key, options, &mut findings)
            && let Some(first) = thumbprints.insert(tp, index)
        {
            findings.add(
                &at,
                format!(
                    "same key material as /keys/{first}; one key must serve one alg and one use"
                ),
            );
        }
    }
    findings.0
}

/// Checks one JWK; returns its thumbprint when its key material is valid.
fn lint_key(
    at: &str,
    key: &Map<String, Value>,
    options: LintOptions,
    findings: &mut Findings,
) -> Option<String> {
    for member in SECRET_MEMBERS {
        if key.contains_key(member) {
            findings.add(
                format!("{at}/{member}"),
                "private or symmetric key member in a public set",
            );
        }
    }
    let string = |name: &str, findings: &mut Findings| -> Option<&str> {
        match key.get(name) {
            None => {
                findings.add(at, format!("missing \"{name}\""));
                None
            }
            Some(Value::String(text)) => Some(text),
            Some(_) => {
                findings.add(format!("{at}/{name}"), "not a string");
                None
            }
        }
    };
    let kty = string("kty", findings);
    let kid = string("kid", findings);
    let alg = string("alg", findings);
    let key_use = string("use", findings);
    if key.contains_key("key_ops") {
        findings.add(
            format!("{at}/key_ops"),
            "publish \"use\", not \"key_ops\" (RFC 7517 §4.3)",
        );
    }

    let kty = kty?;
    if kty == "oct" {
        findings.add(
            format!("{at}/kty"),
            "symmetric (oct) key in a public set: anyone could forge HS256 tokens",
        );
        return None;
    }
    let crv = key.get("crv").and_then(Value::as_str);
    let text = |name: &str| key.get(name).and_then(Value::as_str);
    let material = match public_material(kty, crv, text) {
        Ok(material) => material,
        Err(error) => {
            findings.add(at, error.to_string());
            return None;
        }
    };
    let kind = material.kind();
    if let KeyKind::Rsa { bits } = kind
        && bits < super::RSA_MIN_BITS
    {
        findings.add(
            format!("{at}/n"),
            format!("RSA modulus is {bits} bits; at least 2048 are required"),
        );
    }
    if let Some(alg) = alg {
        match alg.parse::<Algorithm>() {
            Ok(algorithm)
                if !algorithm.accepts(kind)
                    && !matches!(kind, KeyKind::Rsa { bits } if bits < super::RSA_MIN_BITS) =>
            {
                findings.add(
                    format!("{at}/alg"),
                    format!("{alg} does not fit a {kind} key"),
                );
            }
            Ok(algorithm) => {
                if let Some(key_use) = key_use
                    && key_use != algorithm.key_use().name()
                {
                    findings.add(
                        format!("{at}/use"),
                        format!(
                            "\"{key_use}\" contradicts {alg}, a {:?} algorithm",
                            algorithm.key_use().name()
                        ),
                    );
                }
            }
            Err(_) => findings.add(
                format!("{at}/alg"),
                format!("unknown or unsupported alg {alg:?}"),
            ),
        }
    }
    if let Some(key_use) = key_use
        && key_use != "sig"
        && key_use != "enc"
    {
        findings.add(
            format!("{at}/use"),
            format!("\"use\" must be \"sig\" or \"enc\", not {key_use:?}"),
        );
    }
    let tp = thumbprint(&material);
    if options.thumbprint_kids
        && let Some(kid) = kid
        && kid != tp
    {
        findings.add(
            format!("{at}/kid"),
            format!("kid is not the RFC 7638 thumbprint {tp}"),
        );
    }
    lint_certificate(at, key, &material, findings);
    Some(tp)
}

fn lint_certificate(
    at: &str,
    key: &Map<String, Value>,
    material: &super::PublicMaterial,
    findings: &mut Findings,
) {
    let x5c = match key.get("x5c") {
        None => None,
        Some(value) => match value.as_array().map(|chain| {
            chain
                .iter()
                .map(|c| c.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        }) {
            Some(Some(chain)) => Some(chain),
            _ => {
                findings.add(
                    format!("{at}/x5c"),
                    "x5c must be a non-empty array of strings",
                );
                return;
            }
        },
    };
    let x5t = key.get("x5t#S256").and_then(Value::as_str);
    if let Some(problem) = super::jwk::certificate_problem(x5c.as_deref(), x5t, material) {
        findings.add(format!("{at}/{}", problem.member), problem.reason);
    }
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, pointer: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Finding {
            pointer: pointer.into(),
            reason: reason.into(),
        });
    }
}

/// Parses JSON like serde_json, but refuses duplicate member names (RFC 7517 §4: member names
/// within a JWK must be unique; RFC 8259 leaves duplicates undefined, so parsers disagree).
fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value.0)
}

struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if object.contains_key(&name) {
                return Err(de::Error::custom(format!("duplicate member name {name:?}")));
            }
            object.insert(name, value);
        }
        Ok(StrictValue(Value::Object(object.into_iter().collect())))
    }
}
