// Behaviour of the `Image` API against real OCI layouts (fixtures/make.sh),
// each test in a fresh temporary home. Run: node --test --test-concurrency=1 __test__/
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  ERROR_CODES,
  assertBlobsVerified,
  ErrorCode,
  Image,
  ImageHandle,
  ImageLease,
  LeaseKind,
  LocalBackend,
  MANIFEST,
  RICH_CONFIG,
  blobFiles,
  blobPath,
  allocated,
  blobsOf,
  fixture,
  freshBackend,
  listing,
  nodeAsync,
  nodeSync,
  refs,
  rejectsWith,
  setAmbientHome,
  sleep,
  sum,
  tempDir,
  tempHome,
  tmpDirOf,
  tmpEntries,
} from './helpers.mjs';

import {
  APP, AMD64, ARM64, BASE, HANDLE_FIELDS, LEASE_FIELDS, RICH, assertHandle, assertToJSON, inRange,
} from './image-shared.mjs';

// =============================================================================
describe('load', () => {
  test('rich: one handle, rich:latest, sizes and digests from manifest.json', async (t) => {
    const { home, backend } = freshBackend(t);
    const t0 = Date.now();
    const loaded = await Image.loadLocal(backend, fixture('rich'));
    const t1 = Date.now();
    assert.ok(Array.isArray(loaded));
    assert.equal(loaded.length, 1);
    assertHandle(loaded[0], 'rich:latest', RICH);
    assert.equal(loaded[0].lastUsedAt, null);
    inRange(loaded[0].createdAt, t0, t1);
    // The cache is an OCI layout holding exactly the image's blobs, each hashing to its name.
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(home, 'cache', 'oci', 'oci-layout'), 'utf8')), {
      imageLayoutVersion: '1.0.0',
    });
    const index = JSON.parse(fs.readFileSync(path.join(home, 'cache', 'oci', 'index.json'), 'utf8'));
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0].digest, RICH.manifestDigest);
    assert.equal(index.manifests[0].annotations['org.opencontainers.image.ref.name'], 'docker.io/library/rich:latest');
    assert.deepEqual(blobFiles(home), [...blobsOf(RICH).keys()].map((d) => d.slice(7)).sort());
    for (const [digest, size] of blobsOf(RICH)) assert.equal(fs.statSync(blobPath(home, digest)).size, size);
    assertBlobsVerified(home);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('pair: two references (base, app) sharing the base layer', async (t) => {
    const { home, backend } = freshBackend(t);
    const loaded = await Image.loadLocal(backend, fixture('pair'));
    assert.equal(loaded.length, 2);
    const byRef = Object.fromEntries(loaded.map((h) => [h.reference, h]));
    assert.deepEqual(Object.keys(byRef).sort(), ['app:latest', 'base:latest']);
    assertHandle(byRef['base:latest'], 'base:latest', BASE);
    assertHandle(byRef['app:latest'], 'app:latest', APP);
    assert.equal(APP.layers[0], BASE.layers[0], 'fixture: app shares the base layer');
    // The shared layer is stored once.
    assert.deepEqual(blobFiles(home), [...blobsOf(BASE, APP).keys()].map((d) => d.slice(7)).sort());
    assert.deepEqual((await refs(backend)).sort(), ['app:latest', 'base:latest']);
  });

  test('skopeo: the layout skopeo copy writes loads as copied:latest', async (t) => {
    const { backend } = freshBackend(t);
    const loaded = await Image.loadLocal(backend, fixture('skopeo'));
    assert.equal(loaded.length, 1);
    assertHandle(loaded[0], 'copied:latest', RICH);
    const d = await Image.inspectLocal(backend, 'copied');
    assert.equal(d.config.digest, RICH.configDigest);
  });

  test('multiarch: resolves to linux/amd64 by default and skips the attestation', async (t) => {
    const { home, backend } = freshBackend(t);
    const loaded = await Image.loadLocal(backend, fixture('multiarch'));
    assert.equal(loaded.length, 1);
    assertHandle(loaded[0], 'multi:latest', AMD64);
    const d = await Image.inspectLocal(backend, 'multi');
    assert.ok(d.config.env.includes('ARCH=amd64'), d.config.env.join(','));
    const blobs = blobFiles(home);
    assert.ok(!blobs.includes(MANIFEST['multiarch/index'].attestationManifestDigest.slice(7)), 'attestation manifest stored');
    for (const digest of blobsOf(ARM64).keys()) assert.ok(!blobs.includes(digest.slice(7)), `arm64 blob ${digest} stored`);
    for (const digest of blobsOf(AMD64).keys()) assert.ok(blobs.includes(digest.slice(7)), `amd64 blob ${digest} missing`);
  });

  test('multiarch with { platform: "linux/arm64" } gives the arm64 manifest', async (t) => {
    const { backend } = freshBackend(t);
    const loaded = await Image.loadLocal(backend, fixture('multiarch'), { platform: 'linux/arm64' });
    assert.equal(loaded.length, 1);
    assertHandle(loaded[0], 'multi:latest', ARM64, { architecture: 'arm64' });
    const d = await Image.inspectLocal(backend, 'multi:latest');
    assert.ok(d.config.env.includes('ARCH=arm64'), d.config.env.join(','));
    assert.equal(d.config.digest, ARM64.configDigest);
  });

  test('multiarch with an absent platform rejects PlatformNotFound, a malformed one InvalidArgument', async (t) => {
    const { home, backend } = freshBackend(t);
    await rejectsWith(() => Image.loadLocal(backend, fixture('multiarch'), { platform: 'linux/s390x' }), 'PlatformNotFound', /s390x/);
    for (const platform of ['bad', 'linux/', '/amd64', 'linux/amd64/v8/extra', '']) {
      await rejectsWith(() => Image.loadLocal(backend, fixture('multiarch'), { platform }), 'InvalidArgument');
    }
    assert.deepEqual(await refs(backend), []);
    assert.deepEqual(blobFiles(home), []);
  });

  test('loading the same layout twice keeps one reference and its first createdAt', async (t) => {
    const { backend } = freshBackend(t);
    const [first] = await Image.loadLocal(backend, fixture('rich'));
    await sleep(30);
    const [second] = await Image.loadLocal(backend, fixture('rich'));
    assert.equal(second.reference, 'rich:latest');
    assert.deepEqual(second.createdAt, first.createdAt);
    const list = await Image.listLocal(backend);
    assert.equal(list.length, 1);
    assert.deepEqual(list[0].createdAt, first.createdAt);
  });
});

describe('the cache is a standard OCI layout', () => {
  test('umoci and skopeo read it; references are stored canonical', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('pair'));
    const oci = path.join(home, 'cache', 'oci');
    const ls = spawnSync('umoci', ['ls', '--layout', oci], { encoding: 'utf8' });
    assert.equal(ls.status, 0, ls.stderr);
    assert.deepEqual(ls.stdout.trim().split('\n').sort(), [
      'docker.io/library/app:latest', 'docker.io/library/base:latest', 'docker.io/library/rich:latest',
    ]);
    const cfg = spawnSync('skopeo', ['inspect', '--config', `oci:${oci}:docker.io/library/rich:latest`], { encoding: 'utf8' });
    assert.equal(cfg.status, 0, cfg.stderr);
    assert.deepEqual(JSON.parse(cfg.stdout), RICH_CONFIG);
  });

  test("a cache's layout loads into another home with the same references", async (t) => {
    const a = freshBackend(t);
    const b = freshBackend(t);
    await Image.loadLocal(a.backend, fixture('pair'));
    await Image.loadLocal(a.backend, fixture('multiarch'), { platform: 'linux/arm64' });
    const loaded = await Image.loadLocal(b.backend, path.join(a.home, 'cache', 'oci'));
    const summary = (hs) => hs.map((h) => [h.reference, h.manifestDigest, h.sizeBytes]).sort();
    assert.deepEqual(summary(loaded), summary(await Image.listLocal(a.backend)));
    assert.deepEqual(summary(await Image.listLocal(b.backend)), [
      ['app:latest', APP.manifestDigest, APP.totalSize],
      ['base:latest', BASE.manifestDigest, BASE.totalSize],
      ['multi:latest', ARM64.manifestDigest, ARM64.totalSize],
    ]);
  });
});

// =============================================================================
describe('list and handles', () => {
  test('an empty home lists nothing', async (t) => {
    const { backend } = freshBackend(t);
    assert.deepEqual(await Image.listLocal(backend), []);
  });

  test('handles: instances with read-only getters, newest createdAt first, toJSON plain', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await sleep(25);
    await Image.loadLocal(backend, fixture('pair'));
    await sleep(25);
    await Image.loadLocal(backend, fixture('multiarch'));
    const list = await Image.listLocal(backend);
    assert.equal(list.length, 4);
    for (const h of list) assert.ok(h instanceof ImageHandle);
    assert.equal(list[0].reference, 'multi:latest');
    assert.deepEqual(list.slice(1, 3).map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    assert.equal(list[3].reference, 'rich:latest');
    for (let i = 1; i < list.length; i++) {
      assert.ok(list[i - 1].createdAt.getTime() >= list[i].createdAt.getTime(), 'not newest first');
    }
    assert.ok(list[0].createdAt > list[3].createdAt);

    const expected = { 'rich:latest': RICH, 'base:latest': BASE, 'app:latest': APP, 'multi:latest': AMD64 };
    for (const h of list) {
      assertHandle(h, h.reference, expected[h.reference]);
      assert.equal(h.lastUsedAt, null, 'never leased: lastUsedAt is null');
      const j = assertToJSON(h);
      assert.equal(j.lastUsedAt, null);
      assert.ok(j.createdAt instanceof Date);
      // JSON.stringify goes through toJSON.
      const s = JSON.parse(JSON.stringify(h));
      assert.equal(s.reference, h.reference);
      assert.equal(s.sizeBytes, h.sizeBytes);
      assert.equal(s.createdAt, h.createdAt.toISOString());
    }
    // The image's own build time, from its config.
    const rich = list.find((h) => h.reference === 'rich:latest');
    assert.equal(rich.imageCreatedAt.getTime(), Date.parse(RICH_CONFIG.created));

    // Getters live on the prototype, without setters; assigning throws and changes nothing.
    const h = list[3];
    for (const k of HANDLE_FIELDS) {
      const desc = Object.getOwnPropertyDescriptor(ImageHandle.prototype, k);
      assert.ok(desc && typeof desc.get === 'function', `${k} is not a getter`);
      assert.equal(desc.set, undefined, `${k} has a setter`);
    }
    assert.throws(() => {
      h.reference = 'evil:latest';
    }, TypeError);
    assert.throws(() => {
      h.sizeBytes = 1;
    }, TypeError);
    assert.equal(h.reference, 'rich:latest');
    assert.equal(h.sizeBytes, RICH.totalSize);
  });

  test('ImageHandle and ImageLease cannot be constructed from JS', () => {
    assert.throws(() => new ImageHandle(), Error);
    assert.throws(() => new ImageLease(), Error);
  });

  test('exports: ErrorCode and LeaseKind hold the documented values', () => {
    assert.deepEqual(Object.values(ErrorCode).sort(), [...ERROR_CODES].sort());
    for (const c of ERROR_CODES) assert.equal(ErrorCode[c], c);
    assert.deepEqual({ ...LeaseKind }, { Sandbox: 'sandbox', Snapshot: 'snapshot', Ingest: 'ingest' });
  });
});

// =============================================================================
describe('get', () => {
  test('equivalent reference forms give the same handle', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const forms = [
      'rich',
      'rich:latest',
      'library/rich',
      'library/rich:latest',
      'docker.io/rich',
      'docker.io/library/rich:latest',
      `rich@${RICH.manifestDigest}`,
      `docker.io/library/rich@${RICH.manifestDigest}`,
    ];
    const reference = (await Image.getLocal(backend, 'rich')).toJSON();
    assert.equal(reference.reference, 'rich:latest');
    assert.equal(reference.manifestDigest, RICH.manifestDigest);
    for (const form of forms) {
      const h = await Image.getLocal(backend, form);
      assert.ok(h instanceof ImageHandle);
      assert.deepEqual(h.toJSON(), reference, `get(${form})`);
    }
  });

  test('absent references reject ImageNotFound naming the reference', async (t) => {
    const { backend } = freshBackend(t);
    await rejectsWith(() => Image.getLocal(backend, 'rich'), 'ImageNotFound', /rich/);
    await Image.loadLocal(backend, fixture('rich'));
    await rejectsWith(() => Image.getLocal(backend, 'rich:other'), 'ImageNotFound', /rich:other/);
    await rejectsWith(() => Image.getLocal(backend, 'ghcr.io/org/rich'), 'ImageNotFound', /ghcr\.io\/org\/rich/);
    await rejectsWith(() => Image.getLocal(backend, `rich@sha256:${'0'.repeat(64)}`), 'ImageNotFound');
    await rejectsWith(() => Image.getLocal(backend, `base@${RICH.manifestDigest}`), 'ImageNotFound');
  });
});

// =============================================================================
describe('inspect', () => {
  test('rich agrees field by field with skopeo inspect --config', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const d = await Image.inspectLocal(backend, 'docker.io/library/rich:latest');
    // The seed's fields, and what skopeo and podman show beside them.
    assert.deepEqual(Object.keys(d).sort(), ['author', 'config', 'created', 'handle', 'history', 'layers']);
    assert.equal(d.created.getTime(), Date.parse(RICH_CONFIG.created));
    assert.equal(d.author, RICH_CONFIG.author);
    assert.deepEqual(d.history.map((h) => h.createdBy), RICH_CONFIG.history.map((h) => h.created_by));
    assert.deepEqual(d.config.exposedPorts, Object.keys(RICH_CONFIG.config.ExposedPorts));
    assert.deepEqual(d.config.volumes, Object.keys(RICH_CONFIG.config.Volumes));
    // The handle is the class get() returns, not a plain object.
    assert.ok(d.handle instanceof ImageHandle);
    assert.deepEqual(d.handle.toJSON(), (await Image.getLocal(backend, 'rich')).toJSON());

    const c = RICH_CONFIG.config;
    assert.equal(d.config.digest, RICH.configDigest);
    assert.deepEqual(d.config.env, c.Env);
    assert.deepEqual(d.config.cmd, c.Cmd);
    assert.deepEqual(d.config.entrypoint, c.Entrypoint);
    assert.equal(d.config.workingDir, c.WorkingDir);
    assert.equal(d.config.user, c.User);
    assert.deepEqual({ ...d.config.labels }, c.Labels);
    assert.equal(d.config.stopSignal, c.StopSignal);

    const diffIds = RICH_CONFIG.rootfs.diff_ids;
    assert.equal(d.layers.length, diffIds.length);
    assert.equal(d.layers.length, RICH.layers.length);
    d.layers.forEach((layer, i) => {
      assert.equal(layer.position, i, 'position 0 is the bottom');
      assert.equal(layer.diffId, diffIds[i]);
      assert.equal(layer.blobDigest, RICH.layers[i]);
      assert.equal(layer.compressedSizeBytes, RICH.layerSizes[i]);
      assert.equal(typeof layer.compressedSizeBytes, 'number');
      assert.equal(layer.erofsSizeBytes, null);
      assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    });
  });

  test('absent values are null; the shared base layer is position 0 of app', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    const app = await Image.inspectLocal(backend, 'app');
    assert.equal(app.config.digest, APP.configDigest);
    assert.deepEqual(app.config.cmd, ['/app/app.txt']);
    assert.equal(app.config.entrypoint, null);
    assert.equal(app.config.stopSignal, null);
    assert.deepEqual(app.layers.map((l) => l.blobDigest), APP.layers);
    assert.equal(app.layers[0].blobDigest, BASE.layers[0]);
    assert.deepEqual(app.layers.map((l) => l.position), [0, 1]);
    const base = await Image.inspectLocal(backend, 'base:latest');
    assert.equal(base.config.cmd, null);
    assert.deepEqual(base.config.env, ['PATH=/usr/bin:/bin']);
    assert.equal(base.config.labels['org.example.name'], 'base');
    await rejectsWith(() => Image.inspectLocal(backend, 'rich'), 'ImageNotFound', /rich/);
  });
});

// =============================================================================
describe('remove', () => {
  test('ImageNotFound for an absent reference; a removed reference is no longer listed', async (t) => {
    const { home, backend } = freshBackend(t);
    await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'ImageNotFound', /rich/);
    await Image.loadLocal(backend, fixture('pair'));
    await rejectsWith(() => Image.removeLocal(backend, 'nope:1'), 'ImageNotFound', /nope:1/);
    assert.equal(await Image.removeLocal(backend, 'docker.io/library/app:latest'), undefined);
    assert.deepEqual(await refs(backend), ['base:latest']);
    await rejectsWith(() => Image.getLocal(backend, 'app'), 'ImageNotFound');
    await rejectsWith(() => Image.removeLocal(backend, 'app'), 'ImageNotFound');
    // Disk space comes back with prune, not remove.
    for (const digest of blobsOf(APP).keys()) assert.ok(fs.existsSync(blobPath(home, digest)));
  });

  test('a leased image rejects ImageInUse naming the lease; force removes it; prune keeps its blobs until release', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const lease = await Image.acquireLocal(backend, 'rich', { id: 'sandbox-42' });
    const err = await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'ImageInUse');
    assert.match(err.message, /sandbox-42/);
    await rejectsWith(() => Image.removeLocal(backend, 'rich', { force: false }), 'ImageInUse', /sandbox-42/);
    assert.deepEqual(await refs(backend), ['rich:latest']);

    await Image.removeLocal(backend, 'rich', { force: true });
    assert.deepEqual(await refs(backend), []);

    const kept = await Image.pruneLocal(backend);
    assert.equal(kept.imageRefsRemoved, 0);
    assert.equal(kept.manifestsRemoved, 0);
    assert.equal(kept.layersRemoved, 0);
    assert.equal(kept.configsRemoved, 0);
    assert.equal(kept.bytesReclaimed, 0);
    for (const digest of blobsOf(RICH).keys()) {
      assert.ok(fs.existsSync(blobPath(home, digest)), `blob ${digest} deleted while leased`);
    }
    assert.deepEqual((await Image.leasesLocal(backend)).map((l) => l.id), ['sandbox-42']);

    assert.equal(await lease.release(), true);
    const richBytes = allocated(home, blobsOf(RICH).keys());
    const freed = await Image.pruneLocal(backend);
    assert.equal(freed.imageRefsRemoved, 0);
    assert.equal(freed.manifestsRemoved, 1);
    assert.equal(freed.configsRemoved, 1);
    assert.equal(freed.layersRemoved, RICH.layers.length);
    assert.equal(freed.bytesReclaimed, richBytes);
    assert.ok(richBytes >= RICH.totalSize);
    assert.deepEqual(blobFiles(home), []);
  });

  test('without force, a reference goes when another reference keeps the leased image', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('skopeo')); // copied:latest, same manifest as rich
    await Image.acquireLocal(backend, 'rich', { id: 'pin' });
    await Image.removeLocal(backend, 'copied');
    assert.deepEqual(await refs(backend), ['rich:latest']);
    await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'ImageInUse', /pin/);
  });
});

// =============================================================================
describe('prune', () => {
  test('report fields match what manifest.json says was deleted', async (t) => {
    const { home, backend } = freshBackend(t);
    const empty = await Image.pruneLocal(backend);
    assert.deepEqual(
      { ...empty },
      {
        imageRefsRemoved: 0, manifestsRemoved: 0, layersRemoved: 0, fsmetaRemoved: 0, vmdkRemoved: 0,
        bytesReclaimed: 0, configsRemoved: 0, tmpFilesRemoved: 0, expiredLeasesRemoved: 0,
        removed: [], overBudgetBytes: 0, dryRun: false,
      },
    );
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('pair'));
    const unique = blobsOf(RICH, BASE, APP);
    const uniqueBytes = allocated(home, unique.keys());
    const r = await Image.pruneLocal(backend);
    const { removed, dryRun, ...counts } = r;
    for (const v of Object.values(counts)) assert.equal(typeof v, 'number');
    assert.equal(dryRun, false);
    assert.deepEqual(
      removed.map((x) => [x.reference, x.manifestDigest]).sort(),
      [['app:latest', APP.manifestDigest], ['base:latest', BASE.manifestDigest], ['rich:latest', RICH.manifestDigest]],
    );
    assert.equal(r.imageRefsRemoved, 3);
    assert.equal(r.manifestsRemoved, 3);
    assert.equal(r.configsRemoved, 3);
    assert.equal(r.layersRemoved, new Set([...RICH.layers, ...BASE.layers, ...APP.layers]).size);
    assert.equal(r.layersRemoved, 5, 'the shared base layer is counted once');
    assert.equal(r.bytesReclaimed, uniqueBytes);
    assert.ok(uniqueBytes >= sum(unique.values()));
    assert.equal(r.fsmetaRemoved, 0);
    assert.equal(r.vmdkRemoved, 0);
    assert.equal(r.tmpFilesRemoved, 0);
    assert.equal(r.expiredLeasesRemoved, 0);
    assert.deepEqual(await Image.listLocal(backend), []);
    assert.deepEqual(blobFiles(home), []);
  });

  test('bytesReclaimed is measured from the deleted files (multiarch)', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('multiarch'));
    const onDisk = allocated(home, blobFiles(home));
    const r = await Image.pruneLocal(backend);
    assert.equal(r.imageRefsRemoved, 1);
    assert.equal(r.bytesReclaimed, onDisk);
    assert.ok(r.bytesReclaimed >= AMD64.totalSize);
    assert.equal(r.configsRemoved, 1);
    assert.equal(r.layersRemoved, 1);
    assert.deepEqual(blobFiles(home), []);
  });

  test("pair's shared base layer is kept while base is leased", async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    const lease = await Image.acquireLocal(backend, 'base');
    const appOnly = allocated(home, [APP.manifestDigest, APP.configDigest, APP.layers[1]]);
    const baseBytes = allocated(home, blobsOf(BASE).keys());
    const r = await Image.pruneLocal(backend);
    assert.equal(r.imageRefsRemoved, 1);
    assert.equal(r.manifestsRemoved, 1);
    assert.equal(r.configsRemoved, 1);
    assert.equal(r.layersRemoved, 1);
    assert.equal(r.bytesReclaimed, appOnly);
    assert.deepEqual(await refs(backend), ['base:latest']);
    assert.deepEqual(blobFiles(home), [...blobsOf(BASE).keys()].map((d) => d.slice(7)).sort());
    assert.equal((await Image.inspectLocal(backend, 'base')).layers[0].blobDigest, APP.layers[0]);

    assert.equal(await Image.releaseLocal(backend, lease.id), true);
    const r2 = await Image.pruneLocal(backend);
    assert.equal(r2.imageRefsRemoved, 1);
    assert.equal(r2.bytesReclaimed, baseBytes);
    assert.deepEqual(blobFiles(home), []);
  });

  test('a tmp file whose writer still holds its flock is not swept', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const live = path.join(tmpDirOf(home), 'live-writer.part');
    fs.writeFileSync(live, 'in flight');
    const child = spawn('flock', ['-x', live, 'sh', '-c', 'echo locked; exec sleep 10'], {
      detached: true,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const closed = new Promise((resolve) => child.on('close', resolve));
    const stop = async () => {
      try {
        process.kill(-child.pid, 'SIGKILL'); // the process group this test made
      } catch (e) {
        if (e.code !== 'ESRCH') throw e;
      }
      await closed;
    };
    t.after(stop);
    await new Promise((resolve, reject) => {
      child.stdout.once('data', resolve);
      child.once('close', (c) => reject(new Error(`flock exited early (${c})`)));
    });
    await Image.acquireLocal(backend, 'rich');
    const r = await Image.pruneLocal(backend);
    assert.equal(r.tmpFilesRemoved, 0);
    assert.ok(fs.existsSync(live), 'a live writer lost its temporary file');
    await stop();
    const r2 = await Image.pruneLocal(backend);
    assert.equal(r2.tmpFilesRemoved, 1);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('stale tmp files and expired leases are swept', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    fs.writeFileSync(path.join(tmpDirOf(home), 'stale-writer.part'), 'left behind by a killed writer');
    await Image.acquireLocal(backend, 'rich', { id: 'short', expiresInSeconds: 0.001 });
    await sleep(50);
    const richBytes = allocated(home, blobsOf(RICH).keys());
    const staleBytes = fs.statSync(path.join(tmpDirOf(home), 'stale-writer.part')).blocks * 512;
    const r = await Image.pruneLocal(backend);
    assert.equal(r.tmpFilesRemoved, 1);
    assert.equal(r.expiredLeasesRemoved, 1);
    assert.equal(r.imageRefsRemoved, 1, 'an expired lease pins nothing');
    // The blobs and the stale temporary (an expired lease file is not cache data).
    assert.equal(r.bytesReclaimed, richBytes + staleBytes);
    assert.deepEqual(tmpEntries(home), []);
    assert.equal(fs.existsSync(path.join(home, 'leases', 'short.json')), false);
    assert.equal(await Image.releaseLocal(backend, 'short'), false);
  });
});

// =============================================================================
