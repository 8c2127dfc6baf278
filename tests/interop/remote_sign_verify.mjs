// Signs JWTs with the given private keys and verifies them with panva `jose` against a live
// issuer: discovery at ISSUER/.well-known/openid-configuration, keys from its `jwks_uri`
// through `createRemoteJWKSet` (checklist items 24-27 of the JOSE interop reference).
//
// Usage: node remote_sign_verify.mjs --issuer ISSUER --keys KEYS.json --out TOKENS.json
//
// KEYS.json: [{"alg": "ES256", "kid": "...", "key_pem": "-----BEGIN PRIVATE KEY-----..."}, ...]
// (PKCS#8; any of RS256..RS512, PS256..PS512, ES256..ES512, EdDSA). For each key it signs a
// token that must verify, then negative tokens that must not: an RSA key's signature under the
// other RSA scheme (PS* for an RS* key, or RS* for a PS* key; only if there is an RSA key),
// HS256 keyed with a public key's PEM, `alg: none`, an unknown kid and a wrong issuer, each
// with a real kid unless stated. TOKENS.json (read by pyjwt_remote_verify.py and the Go
// verifier in go/) holds issuer, audience, jwks_uri and every token with its expectation;
// `expect_by` overrides `expect` for one library. Prints one JSON report on stdout; exits 0
// when every outcome is the expected one, otherwise 1 with a one-line reason on stderr (2 for
// bad usage). `jose` is resolved through NODE_PATH, as printed by setup.sh.

import { createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { loadJose, oneLine, readJson, runMain } from './jose_common.mjs';

const AUDIENCE = 'jwks-operator-interop';
const LIBRARY = 'jose';
const SCRIPT = 'remote_sign_verify';
const SIGNING_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

runMain(SCRIPT, main);

async function main() {
  const args = parseCommandLine();
  const { jose, version } = await loadJose();
  const keys = readKeys(args.keys);
  const jwksUri = await discoverJwksUri(args.issuer);
  const tokens = await signTokens(jose, keys, args.issuer);
  writeFileSync(args.out, `${JSON.stringify({ issuer: args.issuer, audience: AUDIENCE, jwks_uri: jwksUri, tokens }, null, 2)}\n`);

  // One key set for all tokens, as a real relying party holds one.
  const jwks = jose.createRemoteJWKSet(new URL(jwksUri));
  const results = [];
  for (const t of tokens) {
    const outcome = await attempt(() => jose.jwtVerify(t.token, jwks, { issuer: args.issuer, audience: AUDIENCE }));
    results.push(judge(t, outcome));
  }
  const unexpected = results.filter((r) => !r.as_expected).map((r) => `${r.case} ${r.alg} ${r.kid}: expected ${r.expect}, got ${r.outcome}${r.error ? ` (${r.error})` : ''}`);
  const report = { library: LIBRARY, library_version: version, issuer: args.issuer, jwks_uri: jwksUri, results, unexpected };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  if (unexpected.length > 0) {
    process.stderr.write(`${SCRIPT}: ${unexpected.length} unexpected: ${unexpected.join('; ')}\n`);
    process.exit(1);
  }
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: { issuer: { type: 'string' }, keys: { type: 'string' }, out: { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  for (const name of ['issuer', 'keys', 'out']) {
    if (!values[name]) usage(`missing --${name}`);
  }
  return values;
}

function usage(reason) {
  process.stderr.write(`${SCRIPT}: ${reason}; usage: node remote_sign_verify.mjs --issuer ISSUER --keys KEYS.json --out TOKENS.json\n`);
  process.exit(2);
}

function readKeys(file) {
  const keys = readJson(file);
  if (!Array.isArray(keys) || keys.length === 0) throw new Error(`${file} is not a non-empty JSON array`);
  for (const [i, k] of keys.entries()) {
    if (!SIGNING_ALGS.includes(k?.alg)) throw new Error(`${file}[${i}] has alg ${JSON.stringify(k?.alg)}, not one of ${SIGNING_ALGS.join(' ')}`);
    if (typeof k.kid !== 'string' || k.kid === '') throw new Error(`${file}[${i}] has no kid`);
    if (typeof k.key_pem !== 'string') throw new Error(`${file}[${i}] has no key_pem`);
  }
  return keys;
}

// OpenID Connect Discovery 1.0 §4: the document is at the issuer (less a trailing slash) plus
// /.well-known/openid-configuration, and its `issuer` must equal the issuer byte for byte.
async function discoverJwksUri(issuer) {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  let response;
  try {
    response = await fetch(url, { redirect: 'manual' });
  } catch (err) {
    throw new Error(`GET ${url}: ${oneLine(err.cause ?? err)}`);
  }
  if (response.status !== 200) throw new Error(`GET ${url}: HTTP ${response.status}, expected 200`);
  const doc = await response.json();
  if (doc.issuer !== issuer) throw new Error(`discovery issuer ${JSON.stringify(doc.issuer)} differs from ${JSON.stringify(issuer)}`);
  if (typeof doc.jwks_uri !== 'string') throw new Error(`discovery document at ${url} has no jwks_uri`);
  return doc.jwks_uri;
}

async function signTokens(jose, keys, issuer) {
  const sign = async (alg, kid, key, claims = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({ iss: issuer, aud: AUDIENCE, sub: `interop-${alg}`, iat: now, nbf: now - 5, exp: now + 300, ...claims })
      .setProtectedHeader({ alg, kid, typ: 'JWT' })
      .sign(key);
  };
  const tokens = [];
  for (const k of keys) {
    const token = await sign(k.alg, k.kid, await jose.importPKCS8(k.key_pem, k.alg));
    tokens.push({ case: 'valid', alg: k.alg, kid: k.kid, token, expect: 'valid' });
  }

  const first = keys[0];
  const rsa = keys.find((k) => /^(RS|PS)/.test(k.alg));
  if (rsa) {
    // Item 25: a valid signature by the key, but with the other RSA scheme than its JWK's alg.
    const alg = `${rsa.alg.startsWith('RS') ? 'PS' : 'RS'}${rsa.alg.slice(2)}`;
    tokens.push({
      case: 'alg-mismatch', alg, kid: rsa.kid, expect: 'invalid',
      token: await sign(alg, rsa.kid, await jose.importPKCS8(rsa.key_pem, alg)),
      // go-jose verifies with the key material and ignores the JWK's alg (RFC 8725 §3.1 is not
      // enforced), so go-oidc accepts this signature; the reference (item 25) expects only
      // jose and PyJWT's PyJWK to reject it.
      expect_by: { 'go-oidc': 'valid' },
    });
  }
  // Item 26: the key-confusion HS256 token; the secret is the public key's SPKI PEM.
  const confused = rsa ?? first;
  const publicPem = createPublicKey(createPrivateKey(confused.key_pem)).export({ type: 'spki', format: 'pem' });
  tokens.push({
    case: 'hs256-public-key-as-secret', alg: 'HS256', kid: confused.kid, expect: 'invalid',
    token: await sign('HS256', confused.kid, new TextEncoder().encode(publicPem)),
  });
  const now = Math.floor(Date.now() / 1000);
  const unsecured = [{ alg: 'none', kid: first.kid, typ: 'JWT' }, { iss: issuer, aud: AUDIENCE, sub: 'interop-none', iat: now, nbf: now - 5, exp: now + 300 }]
    .map((part) => jose.base64url.encode(JSON.stringify(part))).join('.');
  tokens.push({ case: 'alg-none', alg: 'none', kid: first.kid, expect: 'invalid', token: `${unsecured}.` });
  // Item 27: a genuine signature by a published key, under a kid the set does not have.
  const firstKey = await jose.importPKCS8(first.key_pem, first.alg);
  const unknownKid = `unknown-${first.kid}`;
  tokens.push({ case: 'unknown-kid', alg: first.alg, kid: unknownKid, expect: 'invalid', token: await sign(first.alg, unknownKid, firstKey) });
  tokens.push({
    case: 'wrong-issuer', alg: first.alg, kid: first.kid, expect: 'invalid',
    token: await sign(first.alg, first.kid, firstKey, { iss: `${issuer}/not-this-issuer` }),
  });
  return tokens;
}

function judge(t, outcome) {
  const expect = t.expect_by?.[LIBRARY] ?? t.expect;
  const got = outcome.ok ? 'valid' : 'invalid';
  return { case: t.case, alg: t.alg, kid: t.kid, expect, outcome: got, as_expected: got === expect, code: outcome.code ?? null, error: outcome.error ?? null };
}

async function attempt(fn) {
  try {
    await fn();
    return { ok: true };
  } catch (err) {
    return { ok: false, code: err?.code ?? err?.name ?? 'Error', error: oneLine(err) };
  }
}
