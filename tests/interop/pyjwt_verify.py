"""Verifies the token written by jose_verify.mjs with PyJWT's PyJWK.

Usage: python pyjwt_verify.py --alg ALG --key-dir DIR --other-key-dir OTHER [--token-file FILE]

DIR/jwk.json is the public JWK printed by `jwks-operator jwk generate`; the token defaults to
DIR/token.jwt. OTHER/jwk.json is a different key of the same alg, the negative control: the
token must fail there with a signature error. Prints one JSON object on stdout; exits 0 when
every result is the expected one, otherwise 1 with a one-line reason on stderr (2 for usage).
"""

import argparse
import json
import sys
from pathlib import Path

import cryptography
import jwt

# Shared with jose_verify.mjs: the verifiers check these claims independently.
ISSUER = "https://issuer.interop.jwks-operator.test"
AUDIENCE = "jwks-operator-interop"

SCRIPT = "pyjwt_verify"

# RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2: members a public JWK must never carry.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv")


def main() -> int:
    args = parse_args()
    result = run_checks(args)
    print(json.dumps(result, indent=2))
    if result["unexpected"]:
        print(f"{SCRIPT}: {args.alg}: {'; '.join(result['unexpected'])}", file=sys.stderr)
        return 1
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SCRIPT)
    parser.add_argument("--alg", required=True)
    parser.add_argument("--key-dir", required=True, type=Path)
    parser.add_argument("--other-key-dir", required=True, type=Path)
    parser.add_argument("--token-file", type=Path)
    return parser.parse_args()


def run_checks(args: argparse.Namespace) -> dict:
    unexpected: list[str] = []
    jwk = read_json(args.key_dir / "jwk.json")
    other_jwk = read_json(args.other_key_dir / "jwk.json")
    token_file = args.token_file or args.key_dir / "token.jwt"
    token = read_text(token_file).strip()
    result = {
        "library": "pyjwt",
        "library_version": jwt.__version__,
        "cryptography_version": cryptography.__version__,
        "alg": args.alg,
        "kid": jwk.get("kid"),
        "verify": None,
        "negative_control": None,
        "token_kid_matches_jwk_kid": False,
        "private_members": [],
        "unexpected": unexpected,
    }

    if jwk.get("alg") != args.alg:
        unexpected.append(f"jwk.json has alg {jwk.get('alg')!r}, expected {args.alg}")
    if jwk.get("use") != "sig":
        unexpected.append(f"jwk.json has use {jwk.get('use')!r}, expected 'sig'")
    if other_jwk.get("kid") == jwk.get("kid"):
        unexpected.append(f"negative control uses the same kid {jwk.get('kid')!r}, not a different key")

    result["private_members"] = [m for m in PRIVATE_MEMBERS if m in jwk]
    if result["private_members"]:
        unexpected.append(f"public jwk.json carries private members {result['private_members']}")

    header = attempt(lambda: {"header": jwt.get_unverified_header(token)})
    result["token_kid_matches_jwk_kid"] = header["ok"] and header["header"].get("kid") == jwk.get("kid")
    if not result["token_kid_matches_jwk_kid"]:
        unexpected.append("token header kid does not equal the JWK kid")

    result["verify"] = attempt(lambda: verify_with(token, jwk, args.alg))
    if not result["verify"]["ok"]:
        unexpected.append(f"token did not verify with jwk.json: {result['verify']['error']}")

    result["negative_control"] = attempt(lambda: verify_with(token, other_jwk, args.alg))
    if result["negative_control"]["ok"]:
        unexpected.append("negative control: token verified with a different key's JWK")
    elif result["negative_control"]["code"] != "InvalidSignatureError":
        unexpected.append(
            f"negative control failed for another reason than the signature: {result['negative_control']['error']}"
        )
    return result


def verify_with(token: str, jwk: dict, alg: str) -> dict:
    # PyJWK binds the JWK's alg to the key; decode then rejects any other token alg.
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(token, key=key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)
    return {"key_algorithm": key.algorithm_name, "claims": claims}


def attempt(fn) -> dict:
    try:
        return {"ok": True, **fn()}
    except Exception as err:  # every failure is a result to report, not a crash
        return {"ok": False, "code": type(err).__name__, "error": one_line(err)}


def read_json(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except ValueError as err:
        raise SystemExit(f"{SCRIPT}: cannot parse {path}: {one_line(err)}") from err


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise SystemExit(f"{SCRIPT}: cannot read {path}: {one_line(err)}") from err


def one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


if __name__ == "__main__":
    sys.exit(main())
