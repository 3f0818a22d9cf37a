// Behaviour of the `Image` API, continued from image.test.mjs: leases, the ambient home,
// errors, locking and concurrency. Run: node --test --test-concurrency=1 __test__/
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

describe('leases', () => {
  test('acquire: defaults, custom id, snapshot kind, expiresInSeconds; leases() oldest first', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('pair'));

    const t0 = Date.now();
    const a = await Image.acquireLocal(backend, 'rich');
    const t1 = Date.now();
    assert.ok(a instanceof ImageLease);
    assert.equal(typeof a.id, 'string');
    assert.ok(a.id.length > 0);
    assert.equal(a.kind, 'sandbox');
    assert.equal(a.reference, 'rich:latest');
    assert.equal(a.manifestDigest, RICH.manifestDigest);
    inRange(a.createdAt, t0, t1);
    assert.equal(a.expiresAt, null);
    assert.ok(fs.existsSync(path.join(home, 'leases', `${a.id}.json`)));
    await sleep(5);
    const other = await Image.acquireLocal(backend, 'rich');
    assert.notEqual(other.id, a.id, 'default ids are random');

    await sleep(5);
    const b = await Image.acquireLocal(backend, 'docker.io/library/base:latest', { id: 'snap-1', kind: 'snapshot' });
    assert.equal(b.id, 'snap-1');
    assert.equal(b.kind, 'snapshot');
    assert.equal(b.reference, 'base:latest');
    assert.equal(b.manifestDigest, BASE.manifestDigest);

    await sleep(5);
    const c = await Image.acquireLocal(backend, 'app', { id: 'timed', kind: 'sandbox', expiresInSeconds: 3600 });
    assert.ok(c.expiresAt instanceof Date);
    const ttl = c.expiresAt.getTime() - c.createdAt.getTime();
    assert.ok(Math.abs(ttl - 3_600_000) < 2000, `expiresAt - createdAt = ${ttl} ms`);

    // toJSON: a plain object with the getters' values.
    const j = c.toJSON();
    assert.equal(Object.getPrototypeOf(j), Object.prototype);
    assert.deepEqual(Object.keys(j).sort(), [...LEASE_FIELDS].sort());
    for (const k of LEASE_FIELDS) assert.deepEqual(j[k], c[k], `toJSON().${k}`);
    assert.throws(() => {
      c.id = 'other';
    }, TypeError);

    const listed = await Image.leasesLocal(backend);
    for (const l of listed) assert.ok(l instanceof ImageLease);
    assert.deepEqual(listed.map((l) => l.id), [a.id, other.id, 'snap-1', 'timed']);
    for (let i = 1; i < listed.length; i++) assert.ok(listed[i - 1].createdAt <= listed[i].createdAt, 'not oldest first');
    const snap = listed.find((l) => l.id === 'snap-1');
    assert.deepEqual(snap.toJSON(), b.toJSON());
  });

  test('re-using a lease id for another image never drops the first pin', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('pair'));
    await Image.acquireLocal(backend, 'rich', { id: 'same' });
    await Image.acquireLocal(backend, 'base', { id: 'same' }).catch((e) => {
      assert.ok(ERROR_CODES.includes(e.code), `${e.code}: ${e.message}`);
    });
    await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'ImageInUse', /same/);
  });

  test('acquire on an absent reference rejects ImageNotFound and writes no lease', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await rejectsWith(() => Image.acquireLocal(backend, 'base', { id: 'never' }), 'ImageNotFound', /base/);
    assert.deepEqual(await Image.leasesLocal(backend), []);
  });

  test('acquire refuses the ingest kind and unknown kinds with InvalidArgument, writing no lease', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await rejectsWith(() => Image.acquireLocal(backend, 'rich', { kind: 'ingest' }), 'InvalidArgument', /sandbox.*snapshot/);
    await rejectsWith(() => Image.acquireLocal(backend, 'rich', { kind: 'pet' }), 'InvalidArgument', /"pet"/);
    assert.deepEqual(await Image.leasesLocal(backend), []);
  });

  test('acquiring bumps lastUsedAt of the handle', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    assert.equal((await Image.getLocal(backend, 'base')).lastUsedAt, null);
    const t0 = Date.now();
    const l1 = await Image.acquireLocal(backend, 'base');
    const t1 = Date.now();
    const h1 = await Image.getLocal(backend, 'base');
    inRange(h1.lastUsedAt, t0, t1);
    assert.deepEqual(h1.toJSON().lastUsedAt, h1.lastUsedAt);
    assert.equal((await Image.getLocal(backend, 'app')).lastUsedAt, null, 'app was not leased');
    await sleep(50);
    await Image.acquireLocal(backend, 'base');
    const h2 = await Image.getLocal(backend, 'base');
    assert.ok(h2.lastUsedAt > h1.lastUsedAt, `${h2.lastUsedAt?.toISOString()} not after ${h1.lastUsedAt.toISOString()}`);
    assert.deepEqual((await Image.listLocal(backend)).find((h) => h.reference === 'base:latest').lastUsedAt, h2.lastUsedAt);
    // Releasing does not reset it.
    await l1.release();
    assert.deepEqual((await Image.getLocal(backend, 'base')).lastUsedAt, h2.lastUsedAt);
  });

  test('lease.release() and Image.release(id) resolve true, then false', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const a = await Image.acquireLocal(backend, 'rich', { id: 'a' });
    const b = await Image.acquireLocal(backend, 'rich', { id: 'b' });
    assert.equal(await a.release(), true);
    assert.equal(await a.release(), false);
    assert.equal(await Image.releaseLocal(backend, 'a'), false);
    assert.deepEqual((await Image.leasesLocal(backend)).map((l) => l.id), ['b']);
    assert.equal(await Image.releaseLocal(backend, 'b'), true);
    assert.equal(await Image.releaseLocal(backend, 'b'), false);
    assert.equal(await b.release(), false);
    assert.equal(await Image.releaseLocal(backend, 'never-existed'), false);
    assert.deepEqual(await Image.leasesLocal(backend), []);
    assert.equal(fs.existsSync(path.join(home, 'leases', 'a.json')), false);
    await Image.removeLocal(backend, 'rich');
  });

  test('an expired lease is not listed and does not block remove', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const l = await Image.acquireLocal(backend, 'rich', { expiresInSeconds: 0.001 });
    assert.ok(l.expiresAt instanceof Date);
    await sleep(50);
    assert.deepEqual(await Image.leasesLocal(backend), []);
    await Image.removeLocal(backend, 'rich');
    assert.deepEqual(await refs(backend), []);
  });

  test('leases survive the process that took them', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const r = nodeSync(
      `const { Image, LocalBackend } = require(process.env.MSB_ADDON);
       Image.acquireLocal(new LocalBackend({ home: process.env.H }), 'rich', { id: 'from-child' })
         .then((l) => console.log(JSON.stringify(l.toJSON())), (e) => { console.error(e.code, e.message); process.exit(3); });`,
      { H: home },
    );
    assert.equal(r.status, 0, r.stderr);
    const fromChild = JSON.parse(r.stdout);
    assert.equal(fromChild.id, 'from-child');
    assert.equal(fromChild.manifestDigest, RICH.manifestDigest);
    await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'ImageInUse', /from-child/);
    const [listed] = await Image.leasesLocal(backend);
    assert.equal(listed.id, 'from-child');
    assert.equal(listed.kind, 'sandbox');
    assert.equal(await listed.release(), true);
    await Image.removeLocal(backend, 'rich');
  });
});

// =============================================================================
describe('ambient home (MSB_HOME)', () => {
  test('every ambient method works on MSB_HOME', async (t) => {
    const home = tempHome(t);
    setAmbientHome(t, home);
    const loaded = await Image.load(fixture('pair'));
    assert.deepEqual(loaded.map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    assert.ok(fs.existsSync(path.join(home, 'cache', 'oci', 'index.json')), 'ambient load did not write to MSB_HOME');
    assert.equal((await Image.load(fixture('rich'))).length, 1);

    const list = await Image.list();
    assert.equal(list.length, 3);
    assert.equal(list[0].reference, 'rich:latest');
    assertHandle(await Image.get('library/rich'), 'rich:latest', RICH);
    const d = await Image.inspect('rich');
    assert.deepEqual(d.config.env, RICH_CONFIG.config.Env);

    const lease = await Image.acquire('base', { id: 'amb', kind: 'snapshot' });
    assert.equal(lease.kind, 'snapshot');
    assert.ok(fs.existsSync(path.join(home, 'leases', 'amb.json')));
    assert.deepEqual((await Image.leases()).map((l) => l.id), ['amb']);
    await rejectsWith(() => Image.remove('base'), 'ImageInUse', /amb/);
    await Image.remove('app');
    const r = await Image.prune();
    assert.equal(r.imageRefsRemoved, 1); // rich
    assert.deepEqual((await Image.list()).map((h) => h.reference), ['base:latest']);
    assert.equal(await Image.release('amb'), true);
    assert.equal(await Image.release('amb'), false);
    await Image.remove('base', { force: false });
    assert.deepEqual(await Image.list(), []);
    await rejectsWith(() => Image.acquire('rich'), 'ImageNotFound');
    await rejectsWith(() => Image.load(fixture('multiarch'), { platform: 'linux/s390x' }), 'PlatformNotFound');
  });

  test('MSB_HOME is read at call time: switching it switches caches', async (t) => {
    const homeA = tempHome(t);
    const homeB = tempHome(t);
    setAmbientHome(t, homeA);
    await Image.load(fixture('rich'));
    process.env.MSB_HOME = homeB;
    assert.deepEqual(await Image.list(), []);
    await rejectsWith(() => Image.get('rich'), 'ImageNotFound');
    await Image.load(fixture('pair'));
    const lease = await Image.acquire('base', { id: 'in-b' });
    assert.deepEqual((await Image.list()).map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    process.env.MSB_HOME = homeA;
    assert.deepEqual((await Image.list()).map((h) => h.reference), ['rich:latest']);
    assert.deepEqual(await Image.leases(), []);
    assert.equal(await Image.release('in-b'), false);
    await rejectsWith(() => Image.inspect('base'), 'ImageNotFound');
    await Image.remove('rich');
    process.env.MSB_HOME = homeB;
    await rejectsWith(() => Image.inspect('rich'), 'ImageNotFound');
    assert.deepEqual((await Image.leases()).map((l) => l.id), ['in-b']);
    assert.equal(await lease.release(), true);
    assert.equal((await Image.prune()).imageRefsRemoved, 2);
    // The *Local methods ignore MSB_HOME.
    assert.deepEqual(await Image.listLocal(new LocalBackend({ home: homeA })), []);
  });

  test('LocalBackend: home defaults to MSB_HOME when made, is absolute, and rejects bad options', (t) => {
    const homeA = tempHome(t);
    const homeB = tempHome(t);
    setAmbientHome(t, homeA);
    const b = new LocalBackend();
    assert.equal(b.home, homeA);
    process.env.MSB_HOME = homeB;
    assert.equal(b.home, homeA, 'home was read when the backend was made');
    assert.equal(new LocalBackend({}).home, homeB);
    assert.equal(new LocalBackend({ home: homeA }).home, homeA);
    assert.equal(new LocalBackend({ home: 'relative/home' }).home, path.resolve('relative/home'));
    assert.ok(path.isAbsolute(new LocalBackend({ home: '.' }).home));
    for (const bad of [{ home: 5 }, { lockTimeoutMs: -1 }, { lockTimeoutMs: '10' }, 'home', 42]) {
      assert.throws(
        () => new LocalBackend(bad),
        (e) => e instanceof Error && e.code === 'InvalidArgument',
        `new LocalBackend(${JSON.stringify(bad)})`,
      );
    }
  });
});

// =============================================================================
describe('errors', () => {
  const BAD_REFS = ['', 'UPPER', 'a'.repeat(300), 'x\u0000y', 'rich@sha256:1234', 'rich:tag with space', ':latest'];

  test('InvalidReference from every method that takes a reference, ambient and local', async (t) => {
    const { backend } = freshBackend(t);
    setAmbientHome(t, tempHome(t));
    await Image.loadLocal(backend, fixture('rich'));
    for (const ref of BAD_REFS) {
      const calls = {
        get: () => Image.get(ref),
        getLocal: () => Image.getLocal(backend, ref),
        inspect: () => Image.inspect(ref),
        inspectLocal: () => Image.inspectLocal(backend, ref),
        remove: () => Image.remove(ref),
        removeLocal: () => Image.removeLocal(backend, ref, { force: true }),
        acquire: () => Image.acquire(ref),
        acquireLocal: () => Image.acquireLocal(backend, ref),
      };
      for (const [name, call] of Object.entries(calls)) {
        await t.test(`${name}(${JSON.stringify(ref).slice(0, 24)})`, () => rejectsWith(call, 'InvalidReference'));
      }
    }
    assert.deepEqual(await refs(backend), ['rich:latest']);
    assert.deepEqual(await Image.leasesLocal(backend), []);
  });

  test('wrong argument types reject InvalidArgument (a rejected promise, never a throw)', async (t) => {
    const { home, backend } = freshBackend(t);
    setAmbientHome(t, home);
    await Image.loadLocal(backend, fixture('rich'));
    const handle = await Image.getLocal(backend, 'rich');
    const R = fixture('rich');
    const cases = {
      'get(number)': () => Image.get(42),
      'get(object)': () => Image.get({ reference: 'rich' }),
      'get(undefined)': () => Image.get(undefined),
      'get()': () => Image.get(),
      'getLocal(b, number)': () => Image.getLocal(backend, 42),
      'getLocal(b, object)': () => Image.getLocal(backend, {}),
      'getLocal(b, undefined)': () => Image.getLocal(backend, undefined),
      'getLocal(b, null)': () => Image.getLocal(backend, null),
      'inspect(number)': () => Image.inspect(1),
      'inspectLocal(b, object)': () => Image.inspectLocal(backend, ['rich']),
      'remove(undefined)': () => Image.remove(undefined),
      'removeLocal(b, number)': () => Image.removeLocal(backend, 7),
      'acquire(object)': () => Image.acquire({}),
      'acquireLocal(b, undefined)': () => Image.acquireLocal(backend),
      'load(number)': () => Image.load(5),
      'loadLocal(b, undefined)': () => Image.loadLocal(backend),
      'release(number)': () => Image.release(5),
      'releaseLocal(b, object)': () => Image.releaseLocal(backend, {}),
      // not a LocalBackend
      'getLocal(plain object)': () => Image.getLocal({ home }, 'rich'),
      'getLocal(null)': () => Image.getLocal(null, 'rich'),
      'listLocal(string)': () => Image.listLocal(home),
      'listLocal()': () => Image.listLocal(),
      'inspectLocal(ImageHandle)': () => Image.inspectLocal(handle, 'rich'),
      'removeLocal(undefined)': () => Image.removeLocal(undefined, 'rich'),
      'pruneLocal(object)': () => Image.pruneLocal({}),
      'loadLocal(number)': () => Image.loadLocal(1, R),
      'acquireLocal(fake)': () => Image.acquireLocal(Object.create(LocalBackend.prototype), 'rich'),
      'releaseLocal(string)': () => Image.releaseLocal('x', 'id'),
      'leasesLocal(number)': () => Image.leasesLocal(3),
      // options
      'remove force: "yes"': () => Image.remove('rich', { force: 'yes' }),
      'removeLocal force: 1': () => Image.removeLocal(backend, 'rich', { force: 1 }),
      'removeLocal options: "force"': () => Image.removeLocal(backend, 'rich', 'force'),
      'acquire expiresInSeconds: -1': () => Image.acquire('rich', { expiresInSeconds: -1 }),
      'acquireLocal expiresInSeconds: NaN': () => Image.acquireLocal(backend, 'rich', { expiresInSeconds: NaN }),
      'acquireLocal expiresInSeconds: Infinity': () => Image.acquireLocal(backend, 'rich', { expiresInSeconds: Infinity }),
      'acquireLocal expiresInSeconds: "60"': () => Image.acquireLocal(backend, 'rich', { expiresInSeconds: '60' }),
      'acquire kind: "bogus"': () => Image.acquire('rich', { kind: 'bogus' }),
      'acquireLocal kind: 1': () => Image.acquireLocal(backend, 'rich', { kind: 1 }),
      'acquireLocal id: 5': () => Image.acquireLocal(backend, 'rich', { id: 5 }),
      'acquireLocal id: "../x"': () => Image.acquireLocal(backend, 'rich', { id: '../x' }),
      'acquire id: "a/b"': () => Image.acquire('rich', { id: 'a/b' }),
      'acquireLocal id: ""': () => Image.acquireLocal(backend, 'rich', { id: '' }),
      'release("../x")': () => Image.release('../x'),
      'releaseLocal(b, "../x")': () => Image.releaseLocal(backend, '../x'),
      'releaseLocal(b, "/etc/passwd")': () => Image.releaseLocal(backend, '/etc/passwd'),
      'load platform: 5': () => Image.load(R, { platform: 5 }),
      'loadLocal options: 1': () => Image.loadLocal(backend, R, 1),
    };
    for (const [name, call] of Object.entries(cases)) {
      await t.test(name, () => rejectsWith(call, 'InvalidArgument'));
    }
    // Nothing changed, nothing escaped the home.
    assert.deepEqual(await refs(backend), ['rich:latest']);
    assert.deepEqual(await Image.leasesLocal(backend), []);
    assert.equal(fs.existsSync(path.join(home, 'x.json')), false);
    assert.deepEqual(fs.readdirSync(path.join(home, 'leases')).length, 0);
  });

  /** Copies a fixture into a scratch directory and lets `mutate` break it. */
  function brokenLayout(t, name, mutate) {
    const dir = tempDir(t, 'msb-layout-');
    const layout = path.join(dir, 'layout');
    fs.cpSync(fixture(name), layout, { recursive: true });
    mutate(layout, dir);
    return layout;
  }

  const FAILED_LOADS = {
    'broken-digest': { code: 'DigestMismatch', layout: () => fixture('broken-digest'), re: new RegExp(APP.layers[1].slice(7)) },
    'missing-blob': { code: 'InvalidArchive', layout: () => fixture('missing-blob'), re: new RegExp(APP.layers[1].slice(7)) },
    'a directory without oci-layout': {
      code: 'InvalidArchive',
      layout: (t) => brokenLayout(t, 'rich', (l) => fs.rmSync(path.join(l, 'oci-layout'))),
    },
    'an empty directory': { code: 'InvalidArchive', layout: (t) => tempDir(t, 'msb-empty-') },
    'a path that does not exist': { code: 'InvalidArchive', layout: (t) => path.join(tempDir(t), 'nope') },
    'malformed index.json': {
      code: 'InvalidArchive',
      layout: (t) => brokenLayout(t, 'rich', (l) => fs.writeFileSync(path.join(l, 'index.json'), '{"schemaVersion":2,"manifests":[')),
    },
    'a blob symlinked to a file outside': {
      code: 'InvalidArchive',
      layout: (t) =>
        brokenLayout(t, 'rich', (l, dir) => {
          // The outside file even has the right content: the link itself is the problem.
          const blob = path.join(l, 'blobs', 'sha256', RICH.layers[2].slice(7));
          const outside = path.join(dir, 'outside-blob');
          fs.renameSync(blob, outside);
          fs.symlinkSync(outside, blob);
        }),
    },
    'a blob symlinked to /etc/passwd': {
      code: 'InvalidArchive',
      layout: (t) =>
        brokenLayout(t, 'rich', (l) => {
          const blob = path.join(l, 'blobs', 'sha256', RICH.layers[0].slice(7));
          fs.rmSync(blob);
          fs.symlinkSync('/etc/passwd', blob);
        }),
    },
  };

  for (const [what, { code, layout, re }] of Object.entries(FAILED_LOADS)) {
    test(`load of ${what} rejects ${code} and leaves the cache as it was`, async (t) => {
      const { home, backend } = freshBackend(t);
      // Something unrelated to every broken layout (no shared blobs).
      await Image.loadLocal(backend, fixture('multiarch'));
      const before = await listing(backend);
      const blobsBefore = blobFiles(home);
      const src = layout(t);
      await rejectsWith(() => Image.loadLocal(backend, src), code, re);
      assert.deepEqual(await listing(backend), before);
      assert.deepEqual(blobFiles(home), blobsBefore, 'blobs changed');
      assert.deepEqual(tmpEntries(home), [], 'cache/tmp is not empty');
      assert.deepEqual(await Image.leasesLocal(backend), []);
      const leaseDir = path.join(home, 'leases');
      assert.deepEqual(fs.existsSync(leaseDir) ? fs.readdirSync(leaseDir) : [], [], 'a lease file was left behind');
      // Also from the ambient method.
      setAmbientHome(t, home);
      await rejectsWith(() => Image.load(src), code);
      assert.deepEqual(await listing(backend), before);
      assert.deepEqual(tmpEntries(home), []);
    });
  }

  // A blob the cache already holds is not read from the source again (as
  // containerd and skopeo skip known blobs): the cache's copy was verified
  // when it entered. So a damaged copy in a source can never damage the
  // cache, and the load succeeds with the cache's good content.
  test('a damaged source blob the cache already holds is not read: the cached copy serves', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    const before = await listing(backend);
    const loaded = await Image.loadLocal(backend, fixture('broken-digest'));
    assert.deepEqual(loaded.map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    assert.deepEqual(await listing(backend), before);
    assertBlobsVerified(home);
    const app = await Image.inspectLocal(backend, 'app');
    assert.equal(app.layers[1].blobDigest, APP.layers[1]);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('a symlinked source blob the cache already holds is never followed', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const before = await listing(backend);
    const src = FAILED_LOADS['a blob symlinked to /etc/passwd'].layout(t);
    await Image.loadLocal(backend, src);
    assert.deepEqual(await listing(backend), before);
    assertBlobsVerified(home);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('a failed load into an empty home leaves it listing nothing', async (t) => {
    const { home, backend } = freshBackend(t);
    await rejectsWith(() => Image.loadLocal(backend, fixture('broken-digest')), 'DigestMismatch');
    assert.deepEqual(await Image.listLocal(backend), []);
    await rejectsWith(() => Image.getLocal(backend, 'base'), 'ImageNotFound');
    assert.deepEqual(blobFiles(home), []);
    assert.deepEqual(tmpEntries(home), []);
  });
});

// =============================================================================
describe('locking', () => {
  /** Holds `flock <mode> <home>/cache/lock` in a child until killed; resolves once held. */
  async function holdLock(t, home, mode) {
    const child = spawn('flock', [mode, path.join(home, 'cache', 'lock'), 'sh', '-c', 'echo locked; exec sleep 10'], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const closed = new Promise((resolve) => child.on('close', resolve));
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      try {
        process.kill(-child.pid, 'SIGKILL'); // the process group this test made
      } catch (e) {
        if (e.code !== 'ESRCH') throw e;
      }
      await closed;
    };
    t.after(release);
    await new Promise((resolve, reject) => {
      child.stdout.once('data', resolve);
      child.once('error', reject);
      child.once('close', (c) => reject(new Error(`flock exited early (${c})`)));
    });
    return release;
  }

  test('an exclusive lock held by another process makes operations fail Busy within lockTimeoutMs', async (t) => {
    const home = tempHome(t);
    const backend = new LocalBackend({ home, lockTimeoutMs: 200 });
    await Image.loadLocal(backend, fixture('rich'));
    const release = await holdLock(t, home, '-x');
    const t0 = Date.now();
    const err = await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'Busy');
    const waited = Date.now() - t0;
    assert.ok(waited >= 150 && waited < 3000, `waited ${waited} ms for a 200 ms timeout`);
    assert.match(err.message, /lock/);
    await rejectsWith(() => Image.pruneLocal(backend), 'Busy');
    await rejectsWith(() => Image.removeLocal(backend, 'rich', { force: true }), 'Busy');
    await release();
    await Image.removeLocal(backend, 'rich');
    assert.deepEqual(await refs(backend), []);
  });

  test('a shared lock held by another process lets reads through and blocks remove', async (t) => {
    const home = tempHome(t);
    const backend = new LocalBackend({ home, lockTimeoutMs: 200 });
    await Image.loadLocal(backend, fixture('rich'));
    await holdLock(t, home, '-s');
    assert.deepEqual(await refs(backend), ['rich:latest']);
    assert.equal((await Image.getLocal(backend, 'rich')).manifestDigest, RICH.manifestDigest);
    assert.equal((await Image.inspectLocal(backend, 'rich')).config.digest, RICH.configDigest);
    await rejectsWith(() => Image.removeLocal(backend, 'rich'), 'Busy');
    await rejectsWith(() => Image.pruneLocal(backend), 'Busy');
  });
});

// =============================================================================
describe('concurrency', () => {
  test('50 concurrent get/list/inspect/acquire/release calls in one process all succeed', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await Image.loadLocal(backend, fixture('pair'));
    const pre = [];
    for (let i = 0; i < 10; i++) pre.push((await Image.acquireLocal(backend, 'app', { id: `pre-${i}` })).id);
    const ops = [];
    for (let i = 0; i < 50; i++) {
      switch (i % 5) {
        case 0: ops.push(Image.getLocal(backend, i % 2 ? 'rich' : 'base').then((h) => ['get', h.reference])); break;
        case 1: ops.push(Image.listLocal(backend).then((l) => ['list', l.length])); break;
        case 2: ops.push(Image.inspectLocal(backend, 'app').then((d) => ['inspect', d.layers.length])); break;
        case 3: ops.push(Image.acquireLocal(backend, 'rich', { id: `con-${i}` }).then((l) => ['acquire', l.id])); break;
        case 4: ops.push(Image.releaseLocal(backend, pre[(i - 4) / 5]).then((r) => ['release', r])); break;
      }
    }
    const settled = await Promise.allSettled(ops);
    const failures = settled.filter((s) => s.status === 'rejected').map((s) => `${s.reason.code}: ${s.reason.message}`);
    assert.deepEqual(failures, []);
    const results = settled.map((s) => s.value);
    for (const [kind, v] of results) {
      if (kind === 'get') assert.ok(['rich:latest', 'base:latest'].includes(v));
      if (kind === 'list') assert.equal(v, 3);
      if (kind === 'inspect') assert.equal(v, 2);
      if (kind === 'release') assert.equal(v, true);
    }
    const leaseIds = (await Image.leasesLocal(backend)).map((l) => l.id).sort();
    assert.deepEqual(leaseIds, results.filter(([k]) => k === 'acquire').map(([, id]) => id).sort());
    assert.equal(leaseIds.length, 10);
    assert.notEqual((await Image.getLocal(backend, 'rich')).lastUsedAt, null);
  });

  test('two processes loading the same layout into one home both succeed; it is listed once', async (t) => {
    const home = tempHome(t);
    const startAt = Date.now() + 700;
    const script = `
      const { Image, LocalBackend } = require(process.env.MSB_ADDON);
      const backend = new LocalBackend({ home: process.env.H });
      setTimeout(() => {
        Image.loadLocal(backend, process.env.SRC).then(
          (hs) => console.log(JSON.stringify(hs.map((h) => h.reference))),
          (e) => { console.error(e.code, e.message); process.exit(3); });
      }, Math.max(0, Number(process.env.START_AT) - Date.now()));`;
    const env = { H: home, SRC: fixture('pair'), START_AT: String(startAt) };
    const [a, b] = await Promise.all([nodeAsync(script, env), nodeAsync(script, env)]);
    for (const r of [a, b]) {
      assert.equal(r.status, 0, `child failed: ${r.stderr}`);
      assert.deepEqual(JSON.parse(r.stdout).sort(), ['app:latest', 'base:latest']);
    }
    const backend = new LocalBackend({ home });
    assert.deepEqual((await refs(backend)).sort(), ['app:latest', 'base:latest']);
    const index = JSON.parse(fs.readFileSync(path.join(home, 'cache', 'oci', 'index.json'), 'utf8'));
    assert.equal(index.manifests.length, 2);
    assert.deepEqual(blobFiles(home), [...blobsOf(BASE, APP).keys()].map((d) => d.slice(7)).sort());
    assertBlobsVerified(home);
    assert.deepEqual(tmpEntries(home), []);
  });
});
