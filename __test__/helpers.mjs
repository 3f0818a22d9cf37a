// Shared helpers for the Node tests: fixtures (built once), the addon, fresh
// temporary homes, and assertions on coded rejections.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = path.join(ROOT, 'target', 'fixtures');
export const ADDON = path.join(ROOT, 'index.js');

// --- fixtures: made once, idempotently; a failure is an error, never a skip --
function makeFixtures() {
  const r = spawnSync('bash', ['fixtures/make.sh', 'target/fixtures'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error || r.status !== 0) {
    throw new Error(
      `fixtures/make.sh failed (status ${r.status}, ${r.error ?? 'no spawn error'}):\n${r.stdout}\n${r.stderr}`,
    );
  }
  if (!fs.existsSync(path.join(FIXTURES, '.complete'))) {
    throw new Error(`fixtures/make.sh succeeded but ${FIXTURES}/.complete is missing`);
  }
}
makeFixtures();

/** target/fixtures/manifest.json: expected digests and sizes. */
export const MANIFEST = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
/** `skopeo inspect --config oci:rich:rich`. */
export const RICH_CONFIG = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'rich.config.json'), 'utf8'));

/** The path of a fixture layout. */
export const fixture = (name) => path.join(FIXTURES, name);

// --- the addon ---------------------------------------------------------------
const require = createRequire(import.meta.url);
export const addon = require(ADDON);
export const { Image, ImageHandle, ImageLease, LocalBackend, ErrorCode, LeaseKind } = addon;
export const ERROR_CODES = Object.freeze([
  'ImageNotFound', 'ImageInUse', 'InvalidReference', 'InvalidArchive', 'DigestMismatch',
  'CorruptCache', 'PlatformNotFound', 'Busy', 'Unsupported', 'Io', 'Unauthorized',
  'RegistryError', 'InvalidArgument',
]);

// --- temporary directories ---------------------------------------------------
const made = new Set();
function removeDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  made.delete(dir);
}
after(() => {
  for (const dir of [...made]) removeDir(dir);
});

/** A fresh temporary directory, removed after the test `t` (or the file). */
export function tempDir(t, prefix = 'msb-test-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.add(dir);
  if (t) t.after(() => removeDir(dir));
  return dir;
}

/** A fresh, empty cache home for test `t`. */
export const tempHome = (t) => tempDir(t, 'msb-home-');

/** A fresh home and a `LocalBackend` on it. */
export function freshBackend(t, options = {}) {
  const home = tempHome(t);
  return { home, backend: new LocalBackend({ home, ...options }) };
}

/** Sets `MSB_HOME` for the rest of test `t`, restoring it afterwards. */
export function setAmbientHome(t, home) {
  const had = Object.prototype.hasOwnProperty.call(process.env, 'MSB_HOME');
  const previous = process.env.MSB_HOME;
  process.env.MSB_HOME = home;
  t.after(() => {
    if (had) process.env.MSB_HOME = previous;
    else delete process.env.MSB_HOME;
  });
}

// --- the cache on disk -------------------------------------------------------
export const blobsDir = (home) => path.join(home, 'cache', 'oci', 'blobs', 'sha256');
export const blobPath = (home, digest) => path.join(blobsDir(home), digest.replace(/^sha256:/, ''));
export const tmpDirOf = (home) => path.join(home, 'cache', 'tmp');

/** Names of the files under blobs/sha256 (sorted), [] if none. */
export function blobFiles(home) {
  try {
    return fs.readdirSync(blobsDir(home)).sort();
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
}

/** Asserts invariant 2: every file in blobs/sha256/<hex> is a regular file hashing to <hex>. */
export function assertBlobsVerified(home) {
  for (const name of blobFiles(home)) {
    const p = path.join(blobsDir(home), name);
    const st = fs.lstatSync(p);
    assert.ok(st.isFile(), `${p} is not a regular file`);
    const hex = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    assert.equal(hex, name, `${p} hashes to ${hex}`);
  }
}

/** Entries of cache/tmp, [] if it does not exist. */
export function tmpEntries(home) {
  try {
    return fs.readdirSync(tmpDirOf(home));
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
}

/** Every blob (digest -> size) an image summary of manifest.json names. */
export function blobsOf(...summaries) {
  const m = new Map();
  for (const s of summaries) {
    m.set(s.manifestDigest, s.manifestSize);
    m.set(s.configDigest, s.configSize);
    s.layers.forEach((d, i) => m.set(d, s.layerSizes[i]));
  }
  return m;
}

export const sum = (xs) => [...xs].reduce((a, b) => a + b, 0);

/** The bytes blobs of a home occupy on disk (allocated blocks, as `du` counts); absent ones count 0. */
export function allocated(home, digests) {
  let total = 0;
  for (const d of new Set(digests)) {
    try {
      total += fs.statSync(path.join(blobsDir(home), d.replace(/^sha256:/, ''))).blocks * 512;
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
  }
  return total;
}

/** The references a backend lists, in list order. */
export async function refs(backend) {
  return (await Image.listLocal(backend)).map((h) => h.reference);
}

/** A plain snapshot of what a backend lists (for before/after comparisons). */
export async function listing(backend) {
  return (await Image.listLocal(backend)).map((h) => h.toJSON());
}

// --- assertions --------------------------------------------------------------
/**
 * Calls `fn`, which must return a promise (not throw synchronously), and
 * asserts that promise rejects with an `Error` whose `code` is `code` (one of
 * the ErrorCode values). Returns the error.
 */
export async function rejectsWith(fn, code, messageRe) {
  assert.ok(ERROR_CODES.includes(code), `test bug: unknown code ${code}`);
  let p;
  try {
    p = fn();
  } catch (e) {
    assert.fail(`expected a rejected promise (${code}) but the call threw synchronously: ${e?.code} ${e?.message ?? e}`);
  }
  assert.ok(p && typeof p.then === 'function', `expected a promise, got ${typeof p}`);
  let err;
  await p.then(
    (v) => assert.fail(`expected rejection with ${code}, resolved with ${inspectValue(v)}`),
    (e) => {
      err = e;
    },
  );
  assert.ok(err instanceof Error, `rejection is not an Error: ${inspectValue(err)}`);
  assert.ok(ERROR_CODES.includes(err.code), `rejection code ${inspectValue(err.code)} is not an ErrorCode (${err.message})`);
  assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
  if (messageRe) assert.match(err.message, messageRe);
  return err;
}

function inspectValue(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- child processes ---------------------------------------------------------
/** Runs `node -e script` synchronously with the addon path in MSB_ADDON. */
export function nodeSync(script, env = {}, options = {}) {
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
    ...options,
    env: { ...process.env, MSB_ADDON: ADDON, ...env },
  });
  return r;
}

/** Runs `node -e script` asynchronously; resolves { status, stdout, stderr }. */
export function nodeAsync(script, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], {
      env: { ...process.env, MSB_ADDON: ADDON, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

// --- a real registry -----------------------------------------------------------
/** A free TCP port on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts Debian's `docker-registry` on 127.0.0.1 (fails, never skips,
 * without it); returns `{ addr, stop }`.
 */
export async function startRegistry() {
  const dir = tempDir(null, 'msb-registry-');
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: ${addr}\n`);
  const child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  child.on('error', (e) => assert.fail(`docker-registry is required: ${e.message}`));
  for (let i = 0; ; i++) {
    const up = await new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => resolve(sock.destroy() || true));
      sock.on('error', () => resolve(false));
    });
    if (up) break;
    assert.ok(i < 400, 'the registry did not start');
    await sleep(50);
  }
  return { addr, stop: () => child.kill() };
}

/** `skopeo copy oci:<fixture>:<tag> docker://<addr>/<name>` (`--all` with `all`). */
export function pushFixture(addr, from, name, all = false) {
  const [dir, tag] = from.split(':');
  const args = ['copy', '--insecure-policy', '--dest-tls-verify=false'];
  if (all) args.push('--all');
  args.push(`oci:${fixture(dir)}:${tag}`, `docker://${addr}/${name}`);
  const r = spawnSync('skopeo', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

// --- the CLI -----------------------------------------------------------------------
export const CLI = path.join(ROOT, 'bin', 'microsandbox.js');

/** Runs the CLI; returns { status, stdout, stderr } (stdout as a Buffer with `raw`). */
export function runCli(args, { home, input, env = {}, raw = false } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input,
    env: { ...process.env, ...(home ? { MSB_HOME: home } : {}), ...env },
    encoding: raw ? 'buffer' : 'utf8',
    maxBuffer: 64 << 20,
  });
  return { status: r.status, stdout: r.stdout, stderr: raw ? r.stderr.toString() : r.stderr };
}

/** Runs the CLI under a pseudo-terminal, `keys` typed on its stdin. */
export function onTerminal(args, { home, keys = '' }) {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const r = spawnSync('script', ['-qefc', command, '/dev/null'], {
    input: keys,
    env: { ...process.env, MSB_HOME: home, TERM: 'xterm' },
    encoding: 'utf8',
  });
  assert.ok(!r.error, `script is required (util-linux): ${r.error}`);
  return { status: r.status, out: r.stdout };
}

