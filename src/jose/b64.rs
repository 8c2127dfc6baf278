//! base64url without padding (RFC 7515 §2) and Base64urlUInt (RFC 7518 §2).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict decode: refuses padding, the standard alphabet, whitespace and non-zero trailing bits,
/// so that `encode(decode(s)) == s` for every accepted `s`.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    (encode(&bytes) == text).then_some(bytes)
}

/// Base64urlUInt: the big-endian integer in the minimum number of octets; zero is one octet.
pub fn encode_uint(big_endian: &[u8]) -> String {
    let first = big_endian
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(big_endian.len().saturating_sub(1));
    encode(&big_endian[first.min(big_endian.len())..])
}

/// `x5c` members are standard base64 with padding, not base64url (RFC 7517 §4.7).
pub fn encode_standard(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn decode_standard(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_encoding_is_minimal() {
        assert_eq!(encode_uint(&[0x01, 0x00, 0x01]), "AQAB");
        assert_eq!(encode_uint(&[0x00, 0x01, 0x00, 0x01]), "AQAB");
        assert_eq!(encode_uint(&[0x00]), "AA");
        assert_eq!(encode_uint(&[0x00, 0x00]), "AA");
    }

    #[test]
    fn decode_refuses_non_canonical_text() {
        assert_eq!(decode("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(decode("AQAB="), None, "padding");
        assert_eq!(decode("+/8"), None, "standard alphabet");
        assert_eq!(decode("AQ B"), None, "whitespace");
        assert_eq!(decode("AR"), None, "non-zero trailing bits");
        assert_eq!(decode_standard("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(decode_standard("AQ"), None, "x5c needs padding");
    }
}
