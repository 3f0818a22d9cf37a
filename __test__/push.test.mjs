// Image.push and `microsandbox image push` against a real registry:
// Debian's docker-registry on 127.0.0.1, read back with skopeo. Fails,
// never skips, without the packages.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  MANIFEST, fixture, freshBackend, rejectsWith, runCli, startRegistry, tempHome, tmpEntries,
} from './helpers.mjs';
import { Image, LocalBackend } from '../index.js';

/** The digest of what skopeo reads raw at `image` (`--config` for its config). */
function rawDigest(image, config = false) {
  const args = ['inspect', '--tls-verify=false', '--raw', ...(config ? ['--config'] : []), `docker://${image}`];
  const r = spawnSync('skopeo', args, { encoding: 'buffer' });
  assert.equal(r.status, 0, r.stderr.toString());
  return `sha256:${crypto.createHash('sha256').update(r.stdout).digest('hex')}`;
}

describe('push to a registry', () => {
  let registry;
  let addr;
  before(async () => {
    registry = await startRegistry();
    addr = registry.addr;
  });
  after(() => registry?.stop());

  test('push sends the image with its digests and reports each blob', async (t) => {
    const { backend, home } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const index = fs.readFileSync(`${home}/cache/oci/index.json`);
    const events = [];
    const report = await Image.pushLocal(backend, 'rich', {
      to: `${addr}/node/rich:1`,
      chunkBytes: 100,
      onProgress: (e) => events.push(e),
    });
    assert.deepEqual(report, {
      reference: `${addr}/node/rich:1`,
      manifestDigest: MANIFEST.rich.manifestDigest,
      blobsUploaded: 4,
      blobsMounted: 0,
      blobsSkipped: 0,
      bytesUploaded: MANIFEST.rich.totalSize - MANIFEST.rich.manifestSize,
    });
    assert.equal(rawDigest(`${addr}/node/rich:1`), MANIFEST.rich.manifestDigest);
    assert.equal(rawDigest(`${addr}/node/rich:1`, true), MANIFEST.rich.configDigest);
    for (let i = 0; i < 50 && !events.some((e) => e.kind === 'complete'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(events[0].kind, 'resolved');
    assert.equal(events[0].layerCount, 3);
    const done = events.filter((e) => e.kind === 'blobComplete');
    assert.deepEqual(done.map((e) => e.layerIndex).sort(), [0, 1, 2, null].sort());
    assert.ok(done.every((e) => e.how === 'uploaded'));
    assert.equal(events.at(-1).kind, 'complete');
    // The cache is as it was.
    assert.deepEqual(fs.readFileSync(`${home}/cache/oci/index.json`), index);
    assert.deepEqual(tmpEntries(home), []);
    assert.deepEqual(await Image.leasesLocal(backend), []);
  });

  test('bad arguments and refusals reject with their codes', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await rejectsWith(() => Image.pushLocal(backend, 'absent:1', { to: `${addr}/x:1` }), 'ImageNotFound');
    await rejectsWith(() => Image.pushLocal(backend, 'rich', { to: 'Bad Name' }), 'InvalidReference');
    await rejectsWith(() => Image.pushLocal(backend, 'rich', { to: 42 }), 'InvalidArgument');
    await rejectsWith(() => Image.pushLocal(backend, 'rich', { chunkBytes: -1 }), 'InvalidArgument');
    await rejectsWith(() => Image.pushLocal(backend, 'rich', { onProgress: 'no' }), 'InvalidArgument');
    await rejectsWith(() => Image.pushLocal(backend, 'rich', { mirrors: { 'docker.io': ['ftp://x'] } }), 'InvalidArgument');
    const dir = tempHome(t);
    fs.writeFileSync(`${dir}/config.json`, JSON.stringify({ auths: {} }));
    await rejectsWith(
      () => Image.pushLocal(new LocalBackend({ home: dir }), 'rich', { to: `${addr}/x:1` }),
      'ImageNotFound',
    );
  });

  test('image push REF DEST prints the destination and its digest; again, every blob exists', async (t) => {
    const { backend, home } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const dest = `${addr}/cli/rich:1`;
    const r = runCli(['image', 'push', 'rich', dest], { home });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${dest} ${MANIFEST.rich.manifestDigest}\n`);
    assert.equal(r.stderr.trim().split('\n').length, 4, r.stderr);
    assert.match(r.stderr, /layer 2 +uploaded/);
    const again = runCli(['image', 'push', '--json', 'rich', dest], { home });
    assert.equal(again.status, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).blobsSkipped, 4);
    assert.equal(again.stderr, '');
    const bad = runCli(['image', 'push', '--chunk-size', 'lots', 'rich', dest], { home });
    assert.equal(bad.status, 2, bad.stderr);
    const missing = runCli(['image', 'push', 'absent:1', dest], { home });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /ImageNotFound/);
  });
});
