// brood-box's cache commands through the API and the CLI: orphans
// (ls --orphans), gc, and purge refused by a live lease or forced.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Image, MANIFEST, blobFiles, fixture, freshBackend, onTerminal, rejectsWith, runCli } from './helpers.mjs';

const ok = (r) => {
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  return r;
};

describe('orphans and gc', () => {
  test('Image.orphans lists what a dangling prune takes; gc takes them, saying which', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    assert.deepEqual(await Image.orphansLocal(backend), []);
    await Image.removeLocal(backend, 'app');
    const orphans = await Image.orphansLocal(backend);
    const app = MANIFEST['pair/app'];
    assert.deepEqual(
      orphans.map((o) => `${o.kind} ${o.digest}`).sort(),
      [`config ${app.configDigest}`, `layer ${app.layers[1]}`, `manifest ${app.manifestDigest}`].sort(),
    );
    for (const o of orphans) {
      assert.ok(o.sizeBytes > 0);
      assert.ok(o.modifiedAt instanceof Date);
    }
    const listed = ok(runCli(['image', 'ls', '--orphans'], { home })).stdout;
    assert.match(listed, /^DIGEST\s+KIND\s+SIZE\s+MODIFIED$/m);
    assert.match(listed, /^3 orphaned blobs \(1 manifest, 1 config, 1 layer\), \S+B: what image gc would remove$/m);
    assert.deepEqual(JSON.parse(ok(runCli(['image', 'ls', '--orphans', '--json'], { home })).stdout).map((o) => o.digest).sort(), orphans.map((o) => o.digest).sort());
    const gc = ok(runCli(['image', 'gc'], { home })).stdout;
    for (const o of orphans) assert.match(gc, new RegExp(`^Removed ${o.kind} ${o.digest.slice(7, 19)} `, 'm'));
    assert.match(gc, /^Removed 1 manifest, 1 config, 1 layer, /m);
    assert.deepEqual(await Image.orphansLocal(backend), []);
    assert.equal(blobFiles(home).length, MANIFEST['pair/base'].layers.length + 2);
  });
});

describe('purge', () => {
  test('a live lease refuses it, naming the holder; force ends the leases; the layout stays valid', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.acquireLocal(backend, 'rich', { id: 'sbx-7' });
    await rejectsWith(() => Image.purgeLocal(backend), 'ImageInUse', /sandbox sbx-7/);
    const refused = runCli(['image', 'purge', '-y'], { home });
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /^error: ImageInUse: .*sbx-7/m);
    assert.equal((await Image.listLocal(backend)).length, 1);
    const r = JSON.parse(ok(runCli(['image', 'purge', '-y', '--force', '--json'], { home })).stdout);
    assert.equal(r.imageRefsRemoved, 1);
    assert.ok(r.bytesReclaimed > 0);
    assert.deepEqual(blobFiles(home), []);
    assert.deepEqual(await Image.leasesLocal(backend), []);
    const index = JSON.parse(fs.readFileSync(path.join(home, 'cache', 'oci', 'index.json'), 'utf8'));
    assert.deepEqual(index.manifests, []);
    const umoci = spawnSync('umoci', ['ls', '--layout', path.join(home, 'cache', 'oci')], { encoding: 'utf8' });
    assert.equal(umoci.status, 0, umoci.stderr);
    // On a terminal it asks; no keeps everything.
    await Image.loadLocal(backend, fixture('rich'));
    const asked = onTerminal(['image', 'purge'], { home, keys: 'n\n' });
    assert.equal(asked.status, 1);
    assert.match(asked.out, /Are you sure you want to continue\? \[y\/N\]/);
    assert.equal((await Image.listLocal(backend)).length, 1);
    assert.equal(onTerminal(['image', 'purge'], { home, keys: 'y\n' }).status, 0);
    assert.deepEqual(await Image.listLocal(backend), []);
    // Nothing left to purge: a second one is a no-op.
    assert.equal((await Image.purgeLocal(backend, { force: false })).imageRefsRemoved, 0);
  });
});
