// Signs a JWT with a key directory's PKCS#8 private key and checks it with panva `jose`.
//
// Usage: node jose_verify.mjs --alg ALG --key-dir DIR --other-key-dir OTHER
//
// DIR and OTHER each hold `key.pem` (PKCS#8) and `jwk.json` (the public JWK printed by
// `jwks-operator jwk generate`); OTHER is a different key of the same alg, the negative control.
// Writes the token to DIR/token.jwt for pyjwt_verify.py and prints one JSON object on stdout.
// Exits 0 when every result is the expected one; otherwise 1 with a one-line reason on stderr
// (2 for bad usage). `jose` is resolved through NODE_PATH, as printed by setup.sh.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { loadJose, oneLine, readJson, runMain } from './jose_common.mjs';

// Shared with pyjwt_verify.py: the verifiers check these claims independently.
const ISSUER = 'https://issuer.interop.jwks-operator.test';
const AUDIENCE = 'jwks-operator-interop';

const SCRIPT = 'jose_verify';

runMain(SCRIPT, main);

async function main() {
  const args = parseCommandLine();
  const { jose, version } = await loadJose();
  const result = await runChecks(jose, args);
  result.library_version = version;
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (result.unexpected.length > 0) {
    process.stderr.write(`${SCRIPT}: ${args.alg}: ${result.unexpected.join('; ')}\n`);
    process.exit(1);
  }
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        alg: { type: 'string' },
        'key-dir': { type: 'string' },
        'other-key-dir': { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  for (const name of ['alg', 'key-dir', 'other-key-dir']) {
    if (!values[name]) usage(`missing --${name}`);
  }
  return { alg: values.alg, keyDir: values['key-dir'], otherKeyDir: values['other-key-dir'] };
}

function usage(reason) {
  process.stderr.write(
    `${SCRIPT}: ${reason}; usage: node jose_verify.mjs --alg ALG --key-dir DIR --other-key-dir OTHER\n`,
  );
  process.exit(2);
}

async function runChecks(jose, { alg, keyDir, otherKeyDir }) {
  const unexpected = [];
  const jwk = readJson(path.join(keyDir, 'jwk.json'));
  const otherJwk = readJson(path.join(otherKeyDir, 'jwk.json'));
  const result = {
    library: 'jose',
    library_version: null,
    alg,
    kid: jwk.kid ?? null,
    sign: null,
    verify: null,
    negative_control: null,
    thumbprint: null,
    thumbprint_matches_kid: false,
    unexpected,
  };

  if (jwk.alg !== alg) unexpected.push(`jwk.json has alg ${JSON.stringify(jwk.alg)}, expected ${alg}`);
  if (otherJwk.alg !== alg) unexpected.push(`other jwk.json has alg ${JSON.stringify(otherJwk.alg)}, expected ${alg}`);
  if (otherJwk.kid === jwk.kid) unexpected.push(`negative control uses the same kid ${jwk.kid}, not a different key`);

  result.sign = await attempt(async () => {
    const privateKey = await jose.importPKCS8(readFileSync(path.join(keyDir, 'key.pem'), 'utf8'), alg);
    const token = await new jose.SignJWT({ sub: 'interop' })
      .setProtectedHeader({ alg, kid: jwk.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(privateKey);
    writeFileSync(path.join(keyDir, 'token.jwt'), token);
    return { token };
  });
  if (!result.sign.ok) {
    unexpected.push(`signing with key.pem failed: ${result.sign.error}`);
    return result;
  }
  const { token } = result.sign;

  result.verify = await attempt(() => verifyWith(jose, token, jwk, alg));
  if (!result.verify.ok) unexpected.push(`token did not verify with jwk.json: ${result.verify.error}`);

  result.negative_control = await attempt(() => verifyWith(jose, token, otherJwk, alg));
  if (result.negative_control.ok) {
    unexpected.push('negative control: token verified with a different key\'s JWK');
  } else if (result.negative_control.code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') {
    unexpected.push(`negative control failed for another reason than the signature: ${result.negative_control.error}`);
  }

  const thumbprint = await attempt(async () => ({ value: await jose.calculateJwkThumbprint(jwk, 'sha256') }));
  if (thumbprint.ok) {
    result.thumbprint = thumbprint.value;
    result.thumbprint_matches_kid = thumbprint.value === jwk.kid;
    if (!result.thumbprint_matches_kid) {
      unexpected.push(`RFC 7638 thumbprint ${thumbprint.value} differs from kid ${JSON.stringify(jwk.kid)}`);
    }
  } else {
    unexpected.push(`calculateJwkThumbprint failed: ${thumbprint.error}`);
  }
  return result;
}

async function verifyWith(jose, token, jwk, alg) {
  const key = await jose.importJWK(jwk, alg);
  const { payload, protectedHeader } = await jose.jwtVerify(token, key, {
    algorithms: [alg],
    issuer: ISSUER,
    audience: AUDIENCE,
  });
  return { header: protectedHeader, claims: payload };
}

async function attempt(fn) {
  try {
    return { ok: true, ...(await fn()) };
  } catch (err) {
    return { ok: false, code: err?.code ?? err?.name ?? 'Error', error: oneLine(err) };
  }
}
