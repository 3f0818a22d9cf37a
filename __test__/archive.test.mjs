// Image.load of archives made by skopeo: OCI archives (plain and gzip) and
// docker-archives, with the `reference` option.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, MANIFEST, RICH_CONFIG, freshBackend, listing, rejectsWith, tempDir, tmpEntries } from './helpers.mjs';
import { Image } from '../index.js';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function skopeoCopy(from, to, ...extra) {
  run('skopeo', ['copy', '--insecure-policy', ...extra, from, to]);
}

describe('load of archives', () => {
  test('an OCI archive from skopeo, plain and gzipped, loads with skopeo\'s digests', async (t) => {
    const dir = tempDir(t);
    const tar = path.join(dir, 'rich.tar');
    skopeoCopy(`oci:${path.join(FIXTURES, 'rich')}:rich`, `oci-archive:${tar}:rich`);
    run('gzip', ['-k', tar]);
    for (const file of [tar, `${tar}.gz`]) {
      const { home, backend } = freshBackend(t);
      const [h] = await Image.loadLocal(backend, file);
      assert.equal(h.reference, 'rich:latest');
      assert.equal(h.manifestDigest, MANIFEST.rich.manifestDigest);
      assert.equal(h.sizeBytes, MANIFEST.rich.totalSize);
      assert.deepEqual(tmpEntries(home), []);
    }
  });

  test('a docker-archive from skopeo loads every tag, layers keeping their diff_ids', async (t) => {
    const dir = tempDir(t);
    const tar = path.join(dir, 'rich-docker.tar');
    skopeoCopy(`oci:${path.join(FIXTURES, 'rich')}:rich`, `docker-archive:${tar}:example.com/rich:1`, '--additional-tag', 'rich:2');
    const { backend } = freshBackend(t);
    const loaded = await Image.loadLocal(backend, tar);
    assert.deepEqual(loaded.map((h) => h.reference).sort(), ['example.com/rich:1', 'rich:2']);
    const d = await Image.inspectLocal(backend, 'example.com/rich:1');
    assert.deepEqual(d.layers.map((l) => l.blobDigest), RICH_CONFIG.rootfs.diff_ids);
    assert.deepEqual(d.config.cmd, RICH_CONFIG.config.Cmd);
    assert.equal(d.config.stopSignal, 'SIGQUIT');
  });

  test('`reference` renames a single-image source; a bad one is InvalidReference', async (t) => {
    const { backend } = freshBackend(t);
    const [h] = await Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { reference: 'ghcr.io/me/renamed:3' });
    assert.equal(h.reference, 'ghcr.io/me/renamed:3');
    await rejectsWith(() => Image.getLocal(backend, 'rich'), 'ImageNotFound');
    const before = await listing(backend);
    await rejectsWith(() => Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { reference: 'Not/Valid' }), 'InvalidReference');
    await rejectsWith(() => Image.loadLocal(backend, path.join(FIXTURES, 'pair'), { reference: 'one:name' }), 'InvalidArgument');
    await rejectsWith(() => Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { reference: 42 }), 'InvalidArgument');
    assert.deepEqual(await listing(backend), before);
  });

  test('a truncated archive is InvalidArchive and changes nothing', async (t) => {
    const dir = tempDir(t);
    const tar = path.join(dir, 'rich.tar');
    skopeoCopy(`oci:${path.join(FIXTURES, 'rich')}:rich`, `oci-archive:${tar}:rich`);
    const bytes = fs.readFileSync(tar);
    fs.writeFileSync(tar, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const { home, backend } = freshBackend(t);
    await rejectsWith(() => Image.loadLocal(backend, tar), 'InvalidArchive');
    assert.deepEqual(await Image.listLocal(backend), []);
    assert.deepEqual(tmpEntries(home), []);
  });
});

describe('save', () => {
  test('save writes an OCI archive skopeo reads and load takes back, byte-identical each time', async (t) => {
    const dir = tempDir(t);
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, path.join(FIXTURES, 'pair'));
    const a = path.join(dir, 'a.tar');
    const b = path.join(dir, 'b.tar');
    await Image.saveLocal(backend, ['app', 'base'], a);
    await Image.saveLocal(backend, ['base', 'app'], b);
    assert.deepEqual(fs.readFileSync(a), fs.readFileSync(b));
    const out = path.join(dir, 'copy');
    skopeoCopy(`oci-archive:${a}:docker.io/library/app:latest`, `oci:${out}:x`);
    const index = JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8'));
    assert.equal(index.manifests[0].digest, MANIFEST['pair/app'].manifestDigest);
    const other = freshBackend(t).backend;
    const loaded = await Image.loadLocal(other, a);
    assert.deepEqual(loaded.map((h) => h.manifestDigest).sort(), [MANIFEST['pair/app'].manifestDigest, MANIFEST['pair/base'].manifestDigest].sort());
  });

  test('save with format docker writes a docker-archive with RepoTags', async (t) => {
    const dir = tempDir(t);
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { reference: 'example.com/team/rich:9' });
    const tar = path.join(dir, 'd.tar');
    await Image.saveLocal(backend, 'example.com/team/rich:9', tar, { format: 'docker' });
    const r = spawnSync('tar', ['-xOf', tar, 'manifest.json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const manifest = JSON.parse(r.stdout);
    assert.deepEqual(manifest[0].RepoTags, ['example.com/team/rich:9']);
    assert.equal(manifest[0].Config, `blobs/sha256/${MANIFEST.rich.configDigest.slice(7)}`);
    const [h] = await Image.loadLocal(freshBackend(t).backend, tar);
    assert.equal(h.reference, 'example.com/team/rich:9');
  });

  test('save rejects bad arguments and absent images, leaving no file', async (t) => {
    const dir = tempDir(t);
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, path.join(FIXTURES, 'rich'));
    const tar = path.join(dir, 'x.tar');
    await rejectsWith(() => Image.saveLocal(backend, ['rich', 'nope'], tar), 'ImageNotFound');
    await rejectsWith(() => Image.saveLocal(backend, [], tar), 'InvalidArgument');
    await rejectsWith(() => Image.saveLocal(backend, 7, tar), 'InvalidArgument');
    await rejectsWith(() => Image.saveLocal(backend, ['rich', 7], tar), 'InvalidArgument');
    await rejectsWith(() => Image.saveLocal(backend, 'rich', tar, { format: 'zip' }), 'InvalidArgument');
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});

describe('progress', () => {
  test('onProgress receives write events per blob and a final commit', async (t) => {
    const { backend } = freshBackend(t);
    const events = [];
    await Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { onProgress: (e) => events.push(e) });
    // Events are queued to the JS thread; let the queue drain.
    for (let i = 0; i < 20 && !events.some((e) => e.phase === 'commit'); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    MANIFEST.rich.layers.forEach((digest, i) => {
      assert.ok(
        events.some((e) => e.phase === 'write' && e.digest === digest && e.bytes === MANIFEST.rich.layerSizes[i] && e.totalBytes === MANIFEST.rich.layerSizes[i]),
        JSON.stringify(events),
      );
    });
    const commit = events.find((e) => e.phase === 'commit');
    assert.equal(commit.bytes, MANIFEST.rich.totalSize);
    assert.equal(commit.digest, null);
  });

  test('onProgress of the wrong type is InvalidArgument', async (t) => {
    const { backend } = freshBackend(t);
    await rejectsWith(() => Image.loadLocal(backend, path.join(FIXTURES, 'rich'), { onProgress: 'yes' }), 'InvalidArgument');
  });
});
