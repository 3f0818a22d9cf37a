// The TypeScript files of __test__/run/, compiled by tsc against
// index.d.ts and run: the seed page's code blocks verbatim (run/seed.ts) on
// a cache holding python:3.12 and old:tag, and code written against
// microsandbox's own npm package (run/shipped.ts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  Image, LocalBackend, MANIFEST, ROOT, fixture, pushFixture, startRegistry, tempDir, tempHome,
} from './helpers.mjs';

const OUT = path.join(ROOT, 'target', 'ts-run');

before(() => {
  const tsc = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(ROOT, '__test__', 'tsconfig.run.json')], { encoding: 'utf8' });
  assert.equal(tsc.status, 0, `${tsc.stdout}${tsc.stderr}`);
  // `import ... from "microsandbox"` resolves to this package.
  const modules = path.join(OUT, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  fs.rmSync(path.join(modules, 'microsandbox'), { force: true });
  fs.symlinkSync(ROOT, path.join(modules, 'microsandbox'));
});

function run(script, args, home) {
  const r = spawnSync(process.execPath, [path.join(OUT, script), ...args], {
    env: { ...process.env, MSB_HOME: home },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `${script} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function seeded(t) {
  const home = tempHome(t);
  const backend = new LocalBackend({ home });
  await Image.loadLocal(backend, fixture('rich'), { reference: 'python:3.12' });
  await Image.loadLocal(backend, fixture('rich'), { reference: 'old:tag' });
  return { home, backend };
}

const refs = async (backend) => (await Image.listLocal(backend)).map((h) => h.reference).sort();

describe('the seed page, run', () => {
  test('typical flow: lists, inspects, prunes every unused reference', async (t) => {
    const { home, backend } = await seeded(t);
    const out = run('seed.js', ['typicalFlow'], home);
    assert.match(out, /python:3\.12 3/);
    assert.match(out, /\/app/, 'the working dir');
    assert.deepEqual(await refs(backend), []);
  });

  test('get, list, inspect, remove, prune', async (t) => {
    const { home, backend } = await seeded(t);
    assert.match(run('seed.js', ['get'], home), new RegExp(MANIFEST.rich.manifestDigest));
    assert.match(run('seed.js', ['list'], home), /python:3\.12/);
    assert.match(run('seed.js', ['inspect'], home), new RegExp(`0 ${MANIFEST.rich.layers.length ? 'sha256:' : ''}`));
    run('seed.js', ['remove'], home);
    assert.deepEqual(await refs(backend), ['python:3.12']);
    assert.match(run('seed.js', ['prune'], home), /^1 \d+$/m);
    assert.deepEqual(await refs(backend), []);
  });
});

describe('code written against microsandbox 0.6.18', () => {
  let registry;
  before(async () => {
    registry = await startRegistry();
    pushFixture(registry.addr, 'rich:rich', 'team/rich:1');
  });
  after(() => registry?.stop());

  test('load { tag }, save { outputPath, format } (docker by default), pull if-missing with PullProgress', (t) => {
    const home = tempHome(t);
    const out = tempDir(t);
    const result = JSON.parse(run('shipped.js', [fixture('multiarch'), out, registry.addr], home).trim().split('\n').pop());
    assert.deepEqual(result.loaded, ['shipped:1']);
    assert.equal(result.pulled, MANIFEST.rich.manifestDigest);
    assert.equal(result.again, MANIFEST.rich.manifestDigest);
    assert.equal(result.events[0], `resolving ${registry.addr}/team/rich:1`);
    assert.match(result.events[1], new RegExp(`^resolved ${MANIFEST.rich.manifestDigest} ${MANIFEST.rich.layers.length} \\d+$`));
    assert.equal(result.events.at(-1), `complete ${registry.addr}/team/rich:1 ${MANIFEST.rich.layers.length}`);
    // The layers the cache lacked were downloaded, each told done.
    const done = result.events.filter((e) => / done /.test(e));
    assert.equal(done.length, MANIFEST.rich.layers.length, result.events.join('\n'));
    assert.ok(result.events.some((e) => /^layer 0 \d+\/\d+$/.test(e)), result.events.join('\n'));
    const entries = (file) => spawnSync('tar', ['-tf', file], { encoding: 'utf8' }).stdout.split('\n');
    assert.ok(entries(path.join(out, 'shipped.tar')).includes('manifest.json'), 'docker is the default format');
    assert.ok(entries(path.join(out, 'shipped.tar')).includes('index.json'), 'and it carries the OCI layout');
    assert.ok(!entries(path.join(out, 'shipped-oci.tar')).includes('manifest.json'));
  });
});
