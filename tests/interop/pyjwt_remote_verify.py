"""Verifies the tokens written by remote_sign_verify.mjs with PyJWT's PyJWKClient.

Usage: python pyjwt_remote_verify.py TOKENS.json

TOKENS.json holds issuer, audience, jwks_uri and the tokens, each with the outcome it must
have ("valid" or "invalid"; `expect_by` overrides it for one library). One PyJWKClient fetches
the JWK Set from jwks_uri over HTTP; each token is decoded with the PyJWK it selects by kid,
which binds the JWK's alg (checklist item 25), and with an allow-list holding only asymmetric
algorithms, so HS256 and `none` can never verify (item 26). Prints one JSON object on stdout;
exits 0 when every outcome is the expected one, otherwise 1 with a one-line reason on stderr
(2 for usage).
"""

import argparse
import json
import sys
from pathlib import Path

import cryptography
import jwt

LIBRARY = "pyjwt"
SCRIPT = "pyjwt_remote_verify"

ASYMMETRIC_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


def main() -> int:
    parser = argparse.ArgumentParser(prog=SCRIPT)
    parser.add_argument("tokens_file", type=Path, metavar="TOKENS.json")
    args = parser.parse_args()
    try:
        spec = json.loads(args.tokens_file.read_text(encoding="utf-8"))
        issuer, audience, jwks_uri, tokens = (spec[k] for k in ("issuer", "audience", "jwks_uri", "tokens"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"{SCRIPT}: cannot read {args.tokens_file}: {one_line(err)}", file=sys.stderr)
        return 1

    # One client for all tokens, as a relying party holds one (default cache and cooldown).
    client = jwt.PyJWKClient(jwks_uri)
    results = [judge(t, attempt(lambda: verify(client, t["token"], issuer, audience))) for t in tokens]
    unexpected = [
        f"{r['case']} {r['alg']} {r['kid']}: expected {r['expect']}, got {r['outcome']}"
        + (f" ({r['error']})" if r["error"] else "")
        for r in results
        if not r["as_expected"]
    ]
    print(json.dumps({
        "library": LIBRARY,
        "library_version": jwt.__version__,
        "cryptography_version": cryptography.__version__,
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "results": results,
        "unexpected": unexpected,
    }, indent=2))
    if unexpected:
        print(f"{SCRIPT}: {len(unexpected)} unexpected: {'; '.join(unexpected)}", file=sys.stderr)
        return 1
    return 0


def verify(client: jwt.PyJWKClient, token: str, issuer: str, audience: str) -> None:
    signing_key = client.get_signing_key_from_jwt(token)
    header_alg = jwt.get_unverified_header(token).get("alg")
    algorithms = [header_alg] if header_alg in ASYMMETRIC_ALGS else ASYMMETRIC_ALGS
    jwt.decode(token, signing_key, algorithms=algorithms, audience=audience, issuer=issuer)


def judge(token: dict, outcome: dict) -> dict:
    expect = token.get("expect_by", {}).get(LIBRARY, token["expect"])
    got = "valid" if outcome["ok"] else "invalid"
    return {
        "case": token.get("case"),
        "alg": token.get("alg"),
        "kid": token.get("kid"),
        "expect": expect,
        "outcome": got,
        "as_expected": got == expect,
        "code": outcome.get("code"),
        "error": outcome.get("error"),
    }


def attempt(fn) -> dict:
    try:
        fn()
        return {"ok": True}
    except Exception as err:  # every failure is a result to report, not a crash
        return {"ok": False, "code": type(err).__name__, "error": one_line(err)}


def one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


if __name__ == "__main__":
    sys.exit(main())
