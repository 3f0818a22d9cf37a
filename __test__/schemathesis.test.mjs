// schemathesis (from PyPI, installed by scripts/setup.sh) against
// crates/microsandbox-serve/openapi.yaml on a live server: no 5xx, every
// answer as documented, malformed requests refused; the reads change
// nothing at all, and after the writes the cache is still sound. Pulls, pushes,
// saves and loads are left out: they would reach registries off this
// machine and write files at random host paths. Bounded in examples and time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Image, LocalBackend, ROOT, addon, blobFiles, fixture, freePort, tempDir, tempHome } from './helpers.mjs';

const TOKEN = 'schemathesis-token-0123456789';
const SCHEMA = path.join(ROOT, 'crates', 'microsandbox-serve', 'openapi.yaml');
// setup.sh installs it in a virtual environment of its own; else from PATH.
const VENV_ST = path.join(ROOT, 'target', 'schemathesis', 'bin', 'st');
const ST = fs.existsSync(VENV_ST) ? VENV_ST : 'st';

/** What a client could change: index.json, the blob names, the lease files. */
function state(home) {
  const leases = fs.existsSync(path.join(home, 'leases')) ? fs.readdirSync(path.join(home, 'leases')).sort() : [];
  return { index: fs.readFileSync(path.join(home, 'cache', 'oci', 'index.json'), 'utf8'), blobs: blobFiles(home), leases };
}

function st(port, cwd, extra) {
  const args = [
    'run', SCHEMA, '--url', `http://127.0.0.1:${port}`, '-H', `Authorization: Bearer ${TOKEN}`,
    '--checks', 'all', '--exclude-checks', 'positive_data_acceptance',
    '-n', '20', '--seed', '17', '--max-time', '60', '--workers', '1', '--phases', 'coverage,fuzzing',
    '--exclude-path-regex', '/(pull|push|save|load)$', ...extra,
  ];
  const r = spawnSync(ST, args, { cwd, encoding: 'utf8', timeout: 240_000 });
  assert.ok(!r.error, `schemathesis is required (pip install schemathesis, scripts/setup.sh): ${r.error}`);
  assert.equal(r.status, 0, `st ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('schemathesis finds no server error, and nothing changes but what was asked', { timeout: 600_000 }, async (t) => {
  const home = tempHome(t);
  const backend = new LocalBackend({ home });
  await Image.loadLocal(backend, fixture('rich'));
  await Image.loadLocal(backend, fixture('pair'));
  await Image.acquireLocal(backend, 'rich', { id: 'keep' });
  const port = await freePort();
  const server = await addon.serve({ home, listen: `127.0.0.1:${port}`, token: TOKEN });
  t.after(() => server.close());
  const cwd = tempDir(t);

  const before = state(home);
  st(port, cwd, ['--include-method', 'GET']);
  assert.deepEqual(state(home), before, 'the reads changed the cache');

  st(port, cwd, []);
  const report = await Image.verifyLocal(backend);
  assert.ok(report.clean, JSON.stringify(report));
});
