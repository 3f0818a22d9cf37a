// VM disks through the Node API: Image.materialize and its events, the
// seed's erofsSizeBytes, diskUsage's vmBytes, prune's artifact counts and
// vmOnly, verify's artifact checks. The kernel and qemu readings of the
// disks are in the Rust tests (crates/microsandbox/tests/vm.rs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Image, fixture, freshBackend, rejectsWith, runCli, tmpEntries } from './helpers.mjs';

describe('Image.materialize', () => {
  test('returns the disk with absolute paths and sizes, made once, with events', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const before = await Image.inspectLocal(backend, 'rich');
    assert.ok(before.layers.every((l) => l.erofsSizeBytes === null));
    const kinds = [];
    const phases = new Set();
    const disk = await Image.materializeLocal(backend, 'rich', {
      onPullProgress: (e) => kinds.push(e.kind),
      onProgress: (e) => phases.add(e.phase),
    });
    assert.equal(disk.reference, 'rich:latest');
    assert.equal(disk.manifestDigest, (await Image.getLocal(backend, 'rich')).manifestDigest);
    for (const p of [disk.vmdkPath, disk.fsmetaPath, ...disk.layers.map((l) => l.path)]) {
      assert.ok(path.isAbsolute(p) && p.startsWith(home), p);
      assert.ok(fs.statSync(p).isFile(), p);
    }
    assert.equal(disk.layers.length, 3);
    assert.deepEqual(disk.layers.map((l) => l.position), [0, 1, 2]);
    assert.equal(
      disk.totalBytes,
      fs.statSync(disk.fsmetaPath).size + disk.layers.reduce((a, l) => a + l.sizeBytes, 0),
    );
    const text = fs.readFileSync(disk.vmdkPath, 'utf8');
    assert.match(text, /createType="twoGbMaxExtentFlat"/);
    assert.match(text, /\.\.\/fsmeta\//);
    const after = await Image.inspectLocal(backend, 'rich');
    assert.deepEqual(after.layers.map((l) => l.erofsSizeBytes), disk.layers.map((l) => l.sizeBytes));
    assert.deepEqual(after.layers.map((l) => l.diffId), disk.layers.map((l) => l.diffId));
    for (const k of ['layerMaterializeStarted', 'layerMaterializeComplete', 'stitchMergingTrees', 'stitchWritingFsmeta', 'stitchWritingVmdk', 'stitchComplete']) {
      assert.ok(kinds.includes(k), `${k} in ${kinds}`);
    }
    assert.equal(kinds.filter((k) => k === 'layerMaterializeStarted').length, 3);
    assert.ok(phases.has('erofs'), [...phases].join());
    // Made once: a second call makes nothing and returns the same disk.
    const again = [];
    assert.deepEqual(await Image.materializeLocal(backend, 'rich', { onPullProgress: (e) => again.push(e.kind) }), disk);
    assert.equal(again.filter((k) => k === 'layerMaterializeStarted').length, 0);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('an absent reference rejects ImageNotFound; bad options reject InvalidArgument', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    await rejectsWith(() => Image.materializeLocal(backend, 'nope'), 'ImageNotFound', /nope/);
    await rejectsWith(() => Image.materializeLocal(backend, 'rich', { maxLayerBytes: -1 }), 'InvalidArgument', /maxLayerBytes/);
    await rejectsWith(() => Image.materializeLocal(backend, 42), 'InvalidArgument', /reference/);
  });
});

describe('materialize with load, pull and acquire', () => {
  test('a load with materialize makes the disk; an acquire with it hands the lease the same disk', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    assert.equal((await Image.getLocal(backend, 'app')).diskReady, false);
    const loaded = await Image.loadLocal(backend, fixture('rich'), { materialize: true });
    assert.equal((await Image.getLocal(backend, loaded[0].reference)).diskReady, true);
    const lease = await Image.acquireLocal(backend, 'rich', { kind: 'sandbox', materialize: true });
    const disk = await Image.materializeLocal(backend, 'rich');
    assert.deepEqual(lease.disk, disk);
    assert.deepEqual(lease.toJSON().disk, disk);
    for (const p of [disk.vmdkPath, disk.fsmetaPath]) assert.ok(fs.statSync(p).isFile(), p);
    // Without materialize a lease has no disk.
    const bare = await Image.acquireLocal(backend, 'app');
    assert.equal(bare.disk, null);
    assert.equal(bare.toJSON().disk, null);
    assert.equal((await Image.getLocal(backend, 'app')).diskReady, false);
    await Image.releaseLocal(backend, lease.id);
    await Image.releaseLocal(backend, bare.id);
  });
});

describe('VM artifacts in disk control and verify', () => {
  test('diskUsage counts vmBytes; prune counts and removes artifacts; vmOnly keeps blobs', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    const du0 = await Image.diskUsageLocal(backend);
    assert.equal(du0.vmBytes, 0);
    const app = await Image.materializeLocal(backend, 'app');
    const du = await Image.diskUsageLocal(backend);
    assert.ok(du.vmBytes >= app.totalBytes, `${du.vmBytes} < ${app.totalBytes}`);
    assert.equal(du.totalBytes, du0.totalBytes + du.vmBytes);
    assert.equal(du.blobsBytes, du0.blobsBytes);
    const vmOnly = await Image.pruneLocal(backend, { vmOnly: true });
    assert.deepEqual([vmOnly.imageRefsRemoved, vmOnly.fsmetaRemoved, vmOnly.vmdkRemoved, vmOnly.layersRemoved], [0, 1, 1, 2]);
    assert.equal((await Image.listLocal(backend)).length, 2);
    assert.ok(!fs.existsSync(app.vmdkPath));
    await Image.materializeLocal(backend, 'app');
    const dry = await Image.pruneLocal(backend, { dryRun: true });
    assert.deepEqual([dry.fsmetaRemoved, dry.vmdkRemoved], [1, 1]);
    assert.ok(fs.existsSync(app.vmdkPath), 'a dry run deletes nothing');
    const report = await Image.pruneLocal(backend);
    assert.deepEqual([report.fsmetaRemoved, report.vmdkRemoved], [1, 1]);
    assert.equal(report.bytesReclaimed, dry.bytesReclaimed);
    assert.equal((await Image.diskUsageLocal(backend)).vmBytes, 0);
  });

  test('verify checks artifacts and repair deletes a damaged one', async (t) => {
    const { backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const disk = await Image.materializeLocal(backend, 'rich');
    const clean = await Image.verifyLocal(backend);
    assert.equal(clean.clean, true);
    assert.equal(clean.artifactsChecked, 5);
    assert.deepEqual(clean.corruptArtifacts, []);
    fs.truncateSync(disk.layers[0].path, 4096);
    const bad = await Image.verifyLocal(backend);
    assert.equal(bad.clean, false);
    assert.ok(bad.corruptArtifacts.some((c) => c.startsWith('vm/layers/')), bad.corruptArtifacts.join());
    await Image.verifyLocal(backend, { repair: true });
    assert.ok(!fs.existsSync(disk.layers[0].path));
    assert.equal((await Image.verifyLocal(backend)).clean, true);
    assert.deepEqual(await Image.materializeLocal(backend, 'rich'), disk);
  });
});

describe('damage in the cache\'s vm/', () => {
  test('an edited layer image is made again and named in remade; a linked vm/ keeps the cache working', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const disk = await Image.materializeLocal(backend, 'rich');
    assert.deepEqual(disk.remade, []);
    const layer = disk.layers[1].path;
    const good = fs.readFileSync(layer);
    const fd = fs.openSync(layer, 'r+');
    fs.writeSync(fd, Buffer.from([good[4096] ^ 0x20]), 0, 1, 4096);
    fs.closeSync(fd);
    const again = await Image.materializeLocal(backend, 'rich');
    assert.equal(again.remade.length, 1, again.remade.join());
    assert.match(again.remade[0], /^vm\/layers\/[0-9a-f]{64}\.v\d+\.erofs: it was changed after it was made/);
    assert.deepEqual({ ...again, remade: [] }, disk);
    assert.ok(fs.readFileSync(layer).equals(good), 'made again byte for byte');

    // cache/vm moved outside and linked back in.
    const outside = fs.mkdtempSync(path.join(path.dirname(home), 'outside-'));
    t.after(() => fs.rmSync(outside, { recursive: true, force: true }));
    const vm = path.join(home, 'cache', 'vm');
    fs.renameSync(vm, path.join(outside, 'vm'));
    fs.symlinkSync(path.join(outside, 'vm'), vm);
    assert.equal((await Image.listLocal(backend)).length, 1);
    assert.ok((await Image.diskUsageLocal(backend)).totalBytes > 0);
    const report = await Image.verifyLocal(backend);
    assert.equal(report.clean, false);
    assert.ok(report.corruptArtifacts.some((c) => /^vm: .*symbolic link/.test(c)), report.corruptArtifacts.join());
    const third = await Image.materializeLocal(backend, 'rich');
    assert.match(third.remade[0], /^vm: .*symbolic link/);
    assert.ok(fs.lstatSync(vm).isDirectory());
    assert.ok(fs.readFileSync(path.join(outside, 'vm', 'layers', path.basename(layer))).equals(good), 'the outside tree untouched');
    assert.equal((await Image.verifyLocal(backend)).clean, true);
  });
});

describe('the CLI and VM disks', () => {
  const ok = (r) => {
    assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
    return r;
  };

  test('image materialize prints the VMDK, a line per layer image; df and prune --vm-only see them', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('rich'));
    const r = ok(runCli(['image', 'materialize', 'rich'], { home }));
    const vmdk = r.stdout.trim();
    assert.ok(vmdk.startsWith(path.join(home, 'cache', 'vm', 'vmdk')) && fs.statSync(vmdk).isFile(), vmdk);
    assert.equal(r.stderr.split('\n').filter((l) => /^layer \d sha256:[0-9a-f]{12}… \S+$/.test(l)).length, 3, r.stderr);
    const json = JSON.parse(ok(runCli(['image', 'materialize', '--json', 'rich'], { home })).stdout);
    assert.equal(json.vmdkPath, vmdk);
    assert.equal(json.layers.length, 3);
    const ls = ok(runCli(['image', 'ls'], { home })).stdout.split('\n');
    assert.match(ls[0], /LAST USED\s+DISK$/);
    assert.match(ls[1], /^rich:latest\s.*\sready$/);
    assert.equal((await Image.getLocal(backend, 'rich')).diskReady, true);
    const df = ok(runCli(['image', 'df'], { home })).stdout;
    assert.match(df, /^VM disks\s+-\s+-\s+\S+/m);
    assert.ok(JSON.parse(ok(runCli(['image', 'df', '--json'], { home })).stdout).vmBytes > 0);
    const inspect = JSON.parse(ok(runCli(['image', 'inspect', 'rich'], { home })).stdout);
    assert.ok(inspect[0].layers.every((l) => l.erofsSizeBytes > 0));
    const prune = ok(runCli(['image', 'prune', '--vm-only', '-f'], { home })).stdout;
    assert.match(prune, /1 VM disk\b/);
    assert.ok(!fs.existsSync(vmdk));
    assert.equal((await Image.listLocal(backend)).length, 1, 'images stay');
    assert.equal((await Image.getLocal(backend, 'rich')).diskReady, false);
    assert.doesNotMatch(ok(runCli(['image', 'ls'], { home })).stdout, /DISK/);
    // A planted link at an artifact's name: made again, with a warning.
    const made = JSON.parse(ok(runCli(['image', 'materialize', '--json', 'rich'], { home })).stdout);
    const victim = made.layers[0].path;
    fs.rmSync(victim);
    fs.symlinkSync('/etc/passwd', victim);
    const warned = ok(runCli(['image', 'materialize', '-q', 'rich'], { home }));
    assert.match(warned.stderr, /^warning: remade vm\/layers\/[0-9a-f]{64}\.v\d+\.erofs: .*symbolic link/m);
    assert.ok(fs.lstatSync(victim).isFile());
    const bad = runCli(['image', 'materialize'], { home });
    assert.equal(bad.status, 2, bad.stderr);
  });
});
