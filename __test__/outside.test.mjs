// What outside use found, through the Node API and the CLI: a pull of a
// cached multi-arch tag for another platform, a config tampered with on
// disk, and a reload or re-pull of what the cache holds (no layer
// decompressed or written again).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  Image, MANIFEST, blobPath, fixture, freshBackend, pushFixture, rejectsWith, runCli, startRegistry, tempDir,
  tempHome,
} from './helpers.mjs';

const ok = (r) => {
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  return r;
};

describe('a cached tag and another platform', () => {
  let registry;
  before(async () => {
    registry = await startRegistry();
    pushFixture(registry.addr, 'multiarch:multi', 'deb:multi', true);
  });
  after(() => registry?.stop());

  test('the API pulls the platform asked for, or says PlatformNotFound', async (t) => {
    const { backend } = freshBackend(t);
    const ref = `${registry.addr}/deb:multi`;
    const arm = await Image.pullLocal(backend, ref, { platform: 'linux/arm64' });
    assert.equal(arm.manifestDigest, MANIFEST['multiarch/arm64'].manifestDigest);
    await rejectsWith(() => Image.pullLocal(backend, ref, { platform: 'linux/amd64', policy: 'never' }), 'PlatformNotFound', /linux\/arm64/);
    const amd = await Image.pullLocal(backend, ref, { platform: 'linux/amd64' });
    assert.equal(amd.manifestDigest, MANIFEST['multiarch/amd64'].manifestDigest);
    await rejectsWith(() => Image.pullLocal(backend, ref, { platform: 'linux/s390x' }), 'PlatformNotFound');
  });

  test('the CLI likewise', (t) => {
    const home = tempHome(t);
    const ref = `${registry.addr}/deb:multi`;
    const [arm] = JSON.parse(ok(runCli(['image', 'pull', '--json', '--platform', 'linux/arm64', ref], { home })).stdout);
    assert.equal(arm.manifestDigest, MANIFEST['multiarch/arm64'].manifestDigest);
    const [amd] = JSON.parse(ok(runCli(['image', 'pull', '--json', '--policy', 'missing', '--platform', 'linux/amd64', ref], { home })).stdout);
    assert.equal(amd.manifestDigest, MANIFEST['multiarch/amd64'].manifestDigest);
    const never = runCli(['image', 'pull', '--policy', 'never', '--platform', 'linux/s390x', ref], { home });
    assert.equal(never.status, 1);
    assert.match(never.stderr, /^error: PlatformNotFound: /m);
  });

  test('a fully cached pull fetches and decompresses no blob', async (t) => {
    const { backend } = freshBackend(t);
    const ref = `${registry.addr}/deb:multi`;
    await Image.pullLocal(backend, ref);
    const events = [];
    await Image.pullLocal(backend, ref, { policy: 'always', onProgress: (e) => events.push(e) });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(events.filter((e) => e.phase !== 'commit'), []);
  });
});

describe('a config tampered with on disk', () => {
  test('is CorruptCache naming the blob, through the API and the CLI', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const config = MANIFEST.rich.configDigest;
    const file = blobPath(home, config);
    const tampered = JSON.parse(fs.readFileSync(file, 'utf8'));
    tampered.config.Env.push('EVIL=1');
    fs.writeFileSync(file, JSON.stringify(tampered));
    await rejectsWith(() => Image.inspectLocal(backend, 'rich'), 'CorruptCache', new RegExp(config));
    const r = runCli(['image', 'inspect', 'rich'], { home });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^error: CorruptCache: .*${config}`, 'm'));
    assert.doesNotMatch(r.stdout, /EVIL/);
  });
});

describe('a reload of what the cache holds', () => {
  function archive(t) {
    const out = path.join(tempDir(t), 'rich.tar');
    const r = spawnSync('skopeo', ['copy', '--insecure-policy', `oci:${fixture('rich')}:rich`, `oci-archive:${out}:rich`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return out;
  }

  test('decompresses and writes no layer again (API)', async (t) => {
    const { backend } = freshBackend(t);
    const tar = archive(t);
    const first = [];
    await Image.loadLocal(backend, tar, { onProgress: (e) => first.push(e) });
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(first.some((e) => e.phase === 'verify'), 'the first load checks each gzip layer');
    const again = [];
    await Image.loadLocal(backend, tar, { onProgress: (e) => again.push(e) });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(again.filter((e) => e.phase === 'verify' || e.phase === 'write'), []);
  });

  test('tells every layer loaded, then skipped (CLI)', (t) => {
    const home = tempHome(t);
    const tar = archive(t);
    const first = ok(runCli(['image', 'load', tar], { home })).stderr.trim().split('\n');
    const came = first.filter((l) => /^loaded sha256:/.test(l));
    assert.equal(came.length, MANIFEST.rich.layers.length, first.join('\n'));
    const lines = ok(runCli(['image', 'load', tar], { home })).stderr.trim().split('\n');
    const layers = lines.filter((l) => /^(loaded|skipped) sha256:/.test(l));
    assert.equal(layers.length, MANIFEST.rich.layers.length, lines.join('\n'));
    for (const l of layers) assert.match(l, /^skipped /);
  });
});
