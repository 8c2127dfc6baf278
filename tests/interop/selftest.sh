#!/usr/bin/env bash
# Tests the verifier scripts themselves, without the jwks-operator CLI: keys from
# `openssl genpkey`, JWKs from make_test_jwk.py. Every signing alg must pass both verifiers,
# and three broken inputs must each make a verifier exit non-zero: a kid that is not the
# thumbprint, a JWK whose alg differs from the token's, and a "different" key that is the
# same key. Then the remote verifiers (remote_sign_verify.mjs, pyjwt_remote_verify.py and the
# go-oidc binary) run against a loopback HTTP server serving discovery and a JWK Set of one key
# per alg: all three must pass (valid tokens verify, negative tokens are rejected), and must
# fail on a JWK Set that lacks one of the keys and on a discovery document whose issuer is not
# the issuer. Prints one line per case and "N passed, N failed" last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
while IFS='=' read -r name value; do
  case "$name" in
    PYTHON) PYTHON="$value" ;;
    NODE_PATH) export NODE_PATH="$value" ;;
    OIDC_VERIFY) OIDC_VERIFY="$value" ;;
  esac
done < <("$here/setup.sh")

work="$(mktemp -d "${TMPDIR:-/tmp}/jwks-interop-selftest.XXXXXX")"
server_pid=""
trap '[[ -z $server_pid ]] || kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT

genkey() { # ALG DIR
  local dir="$2"
  mkdir -p "$dir"
  case "$1" in
    RS*|PS*) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null ;;
    ES256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" ;;
    ES384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$dir/key.pem" ;;
    ES512) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$dir/key.pem" ;;
    EdDSA) openssl genpkey -algorithm ED25519 -out "$dir/key.pem" ;;
  esac
  "$PYTHON" "$here/make_test_jwk.py" --alg "$1" "$dir/key.pem" >"$dir/jwk.json"
}

verify() { # ALG DIR OTHER: both verifiers, output to DIR/*.json and DIR/*.err
  node "$here/jose_verify.mjs" --alg "$1" --key-dir "$2" --other-key-dir "$3" >"$2/jose.json" 2>"$2/jose.err" \
    && "$PYTHON" "$here/pyjwt_verify.py" --alg "$1" --key-dir "$2" --other-key-dir "$3" >"$2/pyjwt.json" 2>"$2/pyjwt.err"
}

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; }

for alg in RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA; do
  genkey "$alg" "$work/$alg/a"
  genkey "$alg" "$work/$alg/b"
  if verify "$alg" "$work/$alg/a" "$work/$alg/b"; then
    pass "$alg verifies in jose and PyJWT, fails with the other key, thumbprint = kid"
  else
    fail "$alg: $(cat "$work/$alg/a/jose.err" "$work/$alg/a/pyjwt.err" 2>/dev/null | tr '\n' ' ')"
  fi
done

expect_rejected() { # NAME ALG DIR OTHER
  if verify "$2" "$3" "$4"; then
    fail "$1 was not detected"
  else
    pass "$1 is detected: $(cat "$3/jose.err" "$3/pyjwt.err" 2>/dev/null | head -1)"
  fi
}

cp -r "$work/ES256/a" "$work/wrong-kid"
"$PYTHON" -c 'import json,sys; p=sys.argv[1]; j=json.load(open(p)); j["kid"]="not-the-thumbprint"; json.dump(j,open(p,"w"))' "$work/wrong-kid/jwk.json"
expect_rejected "a kid that is not the RFC 7638 thumbprint" ES256 "$work/wrong-kid" "$work/ES256/b"

cp -r "$work/RS256/a" "$work/alg-mismatch"
expect_rejected "an RS256 JWK used for a PS256 token" PS256 "$work/alg-mismatch" "$work/PS256/b"

expect_rejected "a negative control that is the same key" EdDSA "$work/EdDSA/a" "$work/EdDSA/a"

# --- Remote verifiers against a live loopback server ---------------------------------------
# One directory per issuer path under $work/www: good/ serves every key, missing/ all but the
# last (EdDSA), mismatch/ a discovery document that names another issuer.
"$PYTHON" - "$work" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
algs = "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA".split()
jwks = [json.loads((work / a / "a" / "jwk.json").read_text()) for a in algs]
keys = [{"alg": a, "kid": j["kid"], "key_pem": (work / a / "a" / "key.pem").read_text()} for a, j in zip(algs, jwks)]
(work / "keys.json").write_text(json.dumps(keys))
for name, served in (("good", jwks), ("missing", jwks[:-1]), ("mismatch", jwks)):
    (work / "www" / name / ".well-known").mkdir(parents=True)
    (work / "www" / name / ".well-known" / "jwks.json").write_text(json.dumps({"keys": served}))
EOF
python3 -c '
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
' "$work/www" >"$work/port" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
base="http://127.0.0.1:$(cat "$work/port")"
discovery() { # NAME ISSUER-IN-DOCUMENT
  printf '{"issuer":"%s","jwks_uri":"%s/%s/.well-known/jwks.json","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","ES512","EdDSA"]}' \
    "$2" "$base" "$1" >"$work/www/$1/.well-known/openid-configuration"
}
discovery good "$base/good"
discovery missing "$base/missing"
discovery mismatch "$base/other"

remote() { # NAME: signs + jose, then PyJWT, then go-oidc; returns a bit per failed verifier
  local dir="$work/remote-$1" rc=0
  mkdir -p "$dir"
  node "$here/remote_sign_verify.mjs" --issuer "$base/$1" --keys "$work/keys.json" --out "$dir/tokens.json" \
    >"$dir/jose.json" 2>"$dir/jose.err" || rc=1
  [[ -f $dir/tokens.json ]] || return 1
  "$PYTHON" "$here/pyjwt_remote_verify.py" "$dir/tokens.json" >"$dir/pyjwt.json" 2>"$dir/pyjwt.err" || rc=$((rc | 2))
  "$OIDC_VERIFY" "$dir/tokens.json" >"$dir/go-oidc.json" 2>"$dir/go-oidc.err" || rc=$((rc | 4))
  return "$rc"
}

if remote good; then
  pass "remote: every alg verifies in jose, PyJWT and go-oidc; alg mismatch, HS256, none, unknown kid and wrong iss are rejected (go-oidc accepts the alg mismatch)"
else
  fail "remote: $(cat "$work/remote-good/"*.err 2>/dev/null | tr '\n' ' ')"
fi
rc=0
remote missing || rc=$?
if [[ $rc -eq 7 ]]; then
  pass "remote: a JWK Set lacking the EdDSA key fails in all three verifiers"
else
  fail "remote: a JWK Set lacking a key was not detected by every verifier (failed: jose=1 pyjwt=2 go-oidc=4, sum $rc)"
fi
if remote mismatch; then
  fail "remote: a discovery issuer that differs from the issuer was not detected"
else
  pass "remote: a discovery issuer that differs from the issuer is detected: $(head -c 160 "$work/remote-mismatch/jose.err")"
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
