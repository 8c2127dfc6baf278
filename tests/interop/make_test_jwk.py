"""Builds the public JWK of a PEM private key, for selftest.sh only.

Usage: python make_test_jwk.py --alg ALG KEY_PEM > jwk.json

It lets the verifier scripts be tested without the jwks-operator CLI (the real test uses the
CLI's JWK). kid is the RFC 7638 SHA-256 thumbprint; the two known-answer vectors are checked
first so a wrong thumbprint here cannot hide a wrong one elsewhere.
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make_test_jwk")
    parser.add_argument("--alg", required=True)
    parser.add_argument("pem")
    args = parser.parse_args()
    check_thumbprint_vectors()
    with open(args.pem, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    jwk = public_members(key.public_key())
    jwk["kid"] = thumbprint(jwk)
    jwk.update(alg=args.alg, use="sig")
    print(json.dumps(jwk))
    return 0


def public_members(public) -> dict:
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": b64_uint(numbers.n), "e": b64_uint(numbers.e)}
    if isinstance(public, ec.EllipticCurvePublicKey):
        # RFC 7518 §6.2.1.2-3: x and y are full-length, leading zeros kept.
        crv, size = CURVES[public.curve.name]
        numbers = public.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64(numbers.x.to_bytes(size, "big")), "y": b64(numbers.y.to_bytes(size, "big"))}
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    raise SystemExit(f"make_test_jwk: unsupported key type {type(public).__name__}")


def thumbprint(jwk: dict) -> str:
    # RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def check_thumbprint_vectors() -> None:
    rfc7638 = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    rfc8037 = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(rfc7638) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "RFC 7638 §3.1 vector"
    assert thumbprint(rfc8037) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "RFC 8037 A.3 vector"


def b64_uint(value: int) -> str:
    # RFC 7518 §2 Base64urlUInt: minimum number of octets.
    return b64(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


if __name__ == "__main__":
    sys.exit(main())
