// The `ImageHandle` instances of a list (src/types/handles.rs makes them
// with plain N-API calls, not napi-rs's per-instance bookkeeping): each is
// a real instance with every field, a class check tells it from every
// other class, and a collected instance frees what it wrapped.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';

import { synthesize } from '../bench/synth.mjs';
import { Image, ImageHandle, LocalBackend, rejectsWith, tempDir } from './helpers.mjs';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

/** A cache of 2,000 references on 1,000 manifests (bench/synth.mjs). */
function cache(t) {
  const home = path.join(tempDir(t), 'home');
  synthesize(home, { layers: 200, manifests: 1000, refsPerManifest: 2, minLayers: 1, maxLayers: 3 });
  return { home, backend: new LocalBackend({ home }) };
}

/** Collects garbage until the finalizers of collected instances have run. */
async function collect() {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

describe('the instances a list makes', () => {
  test('each is an ImageHandle whose fields and toJSON are what get answers', async (t) => {
    const { backend } = cache(t);
    const list = await Image.listLocal(backend);
    assert.equal(list.length, 2000);
    for (const k of [0, 1, 999, 1999]) {
      const h = list[k];
      assert.ok(h instanceof ImageHandle);
      assert.equal(Object.getPrototypeOf(h), ImageHandle.prototype);
      const got = await Image.getLocal(backend, h.reference);
      assert.deepEqual(h.toJSON(), got.toJSON());
      assert.equal(JSON.stringify(h), JSON.stringify(got));
      assert.match(h.manifestDigest, /^sha256:[0-9a-f]{64}$/);
      assert.ok(h.createdAt instanceof Date);
      assert.equal(typeof h.sizeBytes, 'number');
    }
    // Newest first.
    for (let i = 1; i < list.length; i++) {
      assert.ok(list[i - 1].createdAt.getTime() >= list[i].createdAt.getTime(), `order at ${i}`);
    }
  });

  test('a handle is refused where another class belongs, and nothing else passes for a handle', async (t) => {
    const { backend } = cache(t);
    const [listed] = await Image.listLocal(backend);
    const single = await Image.getLocal(backend, listed.reference);
    for (const handle of [listed, single]) {
      // Read as a LocalBackend, a handle would be memory of another shape.
      await rejectsWith(() => Image.listLocal(handle), 'InvalidArgument');
      await rejectsWith(() => Image.getLocal(handle, listed.reference), 'InvalidArgument');
      const home = Object.getOwnPropertyDescriptor(LocalBackend.prototype, 'home').get;
      assert.throws(() => home.call(handle));
    }
    // Instances of the other classes wrap Rust values too: only the tag
    // tells them apart from a handle.
    const reference = Object.getOwnPropertyDescriptor(ImageHandle.prototype, 'reference').get;
    const lease = await Image.acquireLocal(backend, listed.reference);
    t.after(() => lease.release());
    for (const other of [backend, lease]) {
      assert.throws(() => reference.call(other), /ImageHandle/);
    }
    // The factory flag set for the list's constructor calls is off again.
    assert.throws(() => new ImageHandle(), /constructor/);
    // The handles still read after all that.
    assert.equal(reference.call(listed), listed.reference);
  });

  test('the handles of collected lists are freed', async (t) => {
    const { backend } = cache(t);
    const rss = () => process.memoryUsage().rss;
    const round = async (n) => {
      for (let i = 0; i < n; i++) {
        const list = await Image.listLocal(backend);
        assert.equal(list.length, 2000);
      }
      await collect();
    };
    await round(50); // the heaps reach their working size
    const before = rss();
    await round(150);
    const grown = rss() - before;
    // 300,000 handles not freed would hold over 50 MiB (a boxed handle of
    // 176 bytes each, plus its reference); freed, the heaps stay put.
    assert.ok(grown < 10 * 1024 * 1024, `RSS grew ${(grown / 1048576).toFixed(1)} MiB over 150 lists`);
  });
});
