// A signer and a verifier living through a rotation: for each line on stdin, a JSON object
// {"alg", "kid", "key_pem"} describing the key a signer uses at that moment (read from the
// SigningKey's Secret), signs a JWT with it and verifies the JWT with panva `jose` against the
// JWKS fetched from --jwks-uri (createRemoteJWKSet with a short cache, as a verifier would run).
// Prints one JSON line per input line: {"kid", "ok", "error"?}. Runs until stdin closes.
//
// Usage: node rotation_verifier.mjs --jwks-uri URL --cache-max-age-ms N
// `jose` is resolved through NODE_PATH, as printed by setup.sh.

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ISSUER = 'https://issuer.interop.jwks-operator.test';
const AUDIENCE = 'jwks-operator-interop';

const { values } = parseArgs({
  options: { 'jwks-uri': { type: 'string' }, 'cache-max-age-ms': { type: 'string' } },
  strict: true,
});
if (!values['jwks-uri'] || !values['cache-max-age-ms']) {
  process.stderr.write('rotation_verifier: usage: node rotation_verifier.mjs --jwks-uri URL --cache-max-age-ms N\n');
  process.exit(2);
}

// ESM ignores NODE_PATH, CommonJS resolution honours it: resolve there, then import by URL.
const jose = await import(pathToFileURL(createRequire(import.meta.url).resolve('jose')).href);
const cacheMaxAge = Number(values['cache-max-age-ms']);
const jwks = jose.createRemoteJWKSet(new URL(values['jwks-uri']), {
  cacheMaxAge,
  cooldownDuration: Math.min(cacheMaxAge, 30_000),
});

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { alg, kid, key_pem: keyPem } = JSON.parse(line);
  let result;
  try {
    const key = await jose.importPKCS8(keyPem, alg);
    const token = await new jose.SignJWT({ sub: 'rotation' })
      .setProtectedHeader({ alg, kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(key);
    await jose.jwtVerify(token, jwks, { issuer: ISSUER, audience: AUDIENCE });
    result = { kid, ok: true };
  } catch (err) {
    result = { kid, ok: false, error: `${err.code ?? err.name}: ${err.message}`.split('\n')[0] };
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
