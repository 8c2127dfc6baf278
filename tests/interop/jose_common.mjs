// What the jose scripts (jose_verify.mjs, remote_sign_verify.mjs) share: running `main` with
// one-line errors, loading `jose` through NODE_PATH, reading JSON input.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// Runs a script's `main`; an error it throws is one line on stderr and exit status 1.
export function runMain(script, main) {
  main().catch((err) => {
    process.stderr.write(`${script}: ${oneLine(err)}\n`);
    process.exit(1);
  });
}

// ESM ignores NODE_PATH, CommonJS resolution honours it: resolve there, then import by URL.
export async function loadJose() {
  const require = createRequire(import.meta.url);
  let entry;
  try {
    entry = require.resolve('jose');
  } catch {
    throw new Error(`cannot find the jose package (NODE_PATH=${process.env.NODE_PATH ?? ''}); run tests/interop/setup.sh`);
  }
  const jose = await import(pathToFileURL(entry).href);
  const manifest = path.join(entry.slice(0, entry.lastIndexOf(`${path.sep}dist${path.sep}`)), 'package.json');
  const { version } = JSON.parse(readFileSync(manifest, 'utf8'));
  return { jose, version };
}

export function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read ${file}: ${oneLine(err)}`);
  }
}

export function oneLine(err) {
  const text = err?.code ? `${err.code}: ${err.message}` : String(err?.message ?? err);
  return text.replace(/\s+/g, ' ').trim();
}
