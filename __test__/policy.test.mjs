// Prune options and diskUsage from JS: shapes, units, codes. The rules
// themselves are pinned down in crates/microsandbox/tests/policy.rs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MANIFEST, allocated, blobFiles, blobsOf, fixture, freshBackend, rejectsWith, setAmbientHome, tempHome } from './helpers.mjs';
import { Image } from '../index.js';

const RICH = MANIFEST.rich;
const BASE = MANIFEST['pair/base'];
const APP = MANIFEST['pair/app'];

async function pairAndRich(t) {
  const env = freshBackend(t);
  await Image.loadLocal(env.backend, fixture('pair'));
  await Image.loadLocal(env.backend, fixture('rich'));
  return env;
}

describe('prune options', () => {
  test('dryRun returns the report the real prune then gives, and deletes nothing', async (t) => {
    const { home, backend } = await pairAndRich(t);
    const before = blobFiles(home);
    const beforeBytes = allocated(home, before.map((b) => `sha256:${b}`));
    const dry = await Image.pruneLocal(backend, { dryRun: true });
    assert.equal(dry.dryRun, true);
    assert.deepEqual(blobFiles(home), before);
    assert.equal((await Image.listLocal(backend)).length, 3);
    const real = await Image.pruneLocal(backend);
    assert.deepEqual({ ...real, dryRun: true }, { ...dry });
    assert.equal(real.bytesReclaimed, beforeBytes);
    assert.deepEqual(blobFiles(home), []);
    assert.deepEqual(real.removed.map((r) => r.reference).sort(), ['app:latest', 'base:latest', 'rich:latest']);
    for (const r of real.removed) assert.ok(r.bytes > 0 && r.manifestDigest.startsWith('sha256:'));
  });

  test('dangling keeps every reference', async (t) => {
    const { backend } = await pairAndRich(t);
    const r = await Image.pruneLocal(backend, { dangling: true });
    assert.deepEqual(r.removed, []);
    assert.equal(r.bytesReclaimed, 0);
    assert.equal((await Image.listLocal(backend)).length, 3);
  });

  test('unusedFor takes seconds or a duration string', async (t) => {
    const { backend } = await pairAndRich(t);
    assert.deepEqual((await Image.pruneLocal(backend, { unusedFor: '1h', dryRun: true })).removed, []);
    assert.deepEqual((await Image.pruneLocal(backend, { unusedFor: 3600, dryRun: true })).removed, []);
    await new Promise((r) => setTimeout(r, 20));
    const r = await Image.pruneLocal(backend, { unusedFor: 0.001 });
    assert.equal(r.removed.length, 3);
  });

  test('maxBytes takes bytes or a size string and reports what leases keep above it', async (t) => {
    const { home, backend } = await pairAndRich(t);
    await Image.acquireLocal(backend, 'rich', { id: 'pin' });
    const richBytes = allocated(home, blobsOf(RICH).keys());
    const big = await Image.pruneLocal(backend, { maxBytes: '1TB', dryRun: true });
    assert.deepEqual(big.removed, []);
    const r = await Image.pruneLocal(backend, { maxBytes: 0 });
    assert.deepEqual(r.removed.map((x) => x.reference).sort(), ['app:latest', 'base:latest']);
    assert.equal(r.overBudgetBytes, richBytes);
    assert.deepEqual((await Image.listLocal(backend)).map((h) => h.reference), ['rich:latest']);
  });

  test('bad options reject InvalidArgument and change nothing', async (t) => {
    const { home, backend } = await pairAndRich(t);
    const before = blobFiles(home);
    for (const options of [
      { dangling: true, maxBytes: 1 },
      { dangling: true, unusedFor: '1d' },
      { unusedFor: 'soon' },
      { unusedFor: -1 },
      { unusedFor: true },
      { maxBytes: '20 parsecs' },
      { maxBytes: -5 },
      { maxBytes: {} },
      { dryRun: 'yes' },
      'all',
    ]) {
      await rejectsWith(() => Image.pruneLocal(backend, options), 'InvalidArgument');
    }
    assert.deepEqual(blobFiles(home), before);
    assert.equal((await Image.listLocal(backend)).length, 3);
  });
});

describe('diskUsage', () => {
  test('totals, per-image shared and unique bytes, reclaimable = the dry run', async (t) => {
    const { home, backend } = await pairAndRich(t);
    await Image.acquireLocal(backend, 'base', { id: 'b' });
    const u = await Image.diskUsageLocal(backend);
    assert.equal(u.blobsBytes, allocated(home, blobFiles(home).map((b) => `sha256:${b}`)));
    assert.ok(u.totalBytes >= u.blobsBytes + u.tmpBytes);
    assert.equal(u.reclaimableBytes, (await Image.pruneLocal(backend, { dryRun: true })).bytesReclaimed);
    const by = Object.fromEntries(u.images.map((i) => [i.reference, i]));
    assert.deepEqual(Object.keys(by).sort(), ['app:latest', 'base:latest', 'rich:latest']);
    assert.equal(by['rich:latest'].uniqueBytes, allocated(home, blobsOf(RICH).keys()));
    assert.equal(by['rich:latest'].sharedBytes, 0);
    assert.equal(by['base:latest'].inUse, true);
    assert.equal(by['base:latest'].uniqueBytes, 0, 'leased: removing it frees nothing');
    assert.ok(by['base:latest'].lastUsedAt instanceof Date);
    assert.equal(by['app:latest'].inUse, false);
    assert.equal(by['app:latest'].lastUsedAt, null);
    assert.equal(by['app:latest'].uniqueBytes, allocated(home, [APP.manifestDigest, APP.configDigest, APP.layers[1]]));
    assert.equal(by['app:latest'].sharedBytes, allocated(home, [BASE.layers[0]]));
    for (const i of u.images) {
      assert.equal(i.sizeBytes, i.sharedBytes + i.uniqueBytes);
      assert.equal(i.manifestDigest, MANIFEST[i.reference === 'rich:latest' ? 'rich' : `pair/${i.reference.split(':')[0]}`].manifestDigest);
    }
  });

  test('on the ambient home, and on an empty cache', async (t) => {
    const home = tempHome(t);
    setAmbientHome(t, home);
    const u = await Image.diskUsage();
    assert.deepEqual({ ...u, totalBytes: 0 }, { totalBytes: 0, blobsBytes: 0, vmBytes: 0, tmpBytes: 0, reclaimableBytes: 0, images: [] });
    // A read-only call makes no cache where there is none.
    assert.ok(!fs.existsSync(path.join(home, 'cache')));
    await rejectsWith(() => Image.diskUsageLocal({}), 'InvalidArgument');
  });
});
