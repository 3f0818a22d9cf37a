// Image.pull against a real registry: Debian's docker-registry on
// 127.0.0.1, filled with skopeo. Fails, never skips, without the package.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FIXTURES, MANIFEST, freshBackend, rejectsWith, tempDir } from './helpers.mjs';
import { Image } from '../index.js';

async function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port) {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the registry did not start');
}

describe('pull from a registry', () => {
  let child;
  let addr;
  before(async () => {
    const dir = tempDir(null, 'msb-registry-');
    const port = await freePort();
    addr = `127.0.0.1:${port}`;
    const config = path.join(dir, 'config.yml');
    fs.writeFileSync(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: ${addr}\n`);
    child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
    child.on('error', (e) => { throw new Error(`docker-registry is required: ${e.message}`); });
    await waitForPort(port);
    const r = spawnSync('skopeo', ['copy', '--insecure-policy', '--dest-tls-verify=false', `oci:${path.join(FIXTURES, 'rich')}:rich`, `docker://${addr}/team/rich:1`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => child?.kill());

  test('pull brings the image with the registry digests, and reports progress', async (t) => {
    const { backend } = freshBackend(t);
    const events = [];
    const h = await Image.pullLocal(backend, `${addr}/team/rich:1`, { onProgress: (e) => events.push(e) });
    assert.equal(h.manifestDigest, MANIFEST.rich.manifestDigest);
    assert.equal(h.sizeBytes, MANIFEST.rich.totalSize);
    assert.equal(h.reference, `${addr}/team/rich:1`);
    for (let i = 0; i < 20 && !events.some((e) => e.phase === 'commit'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(events.some((e) => e.phase === 'commit'), JSON.stringify(events));
    const again = await Image.pullLocal(backend, `${addr}/team/rich:1`, { policy: 'never' });
    assert.equal(again.manifestDigest, h.manifestDigest);
  });

  test('absent images and bad options reject with their codes', async (t) => {
    const { backend } = freshBackend(t);
    await rejectsWith(() => Image.pullLocal(backend, `${addr}/team/rich:nope`), 'ImageNotFound');
    await rejectsWith(() => Image.pullLocal(backend, `${addr}/team/rich:1`, { policy: 'never' }), 'ImageNotFound');
    await rejectsWith(() => Image.pullLocal(backend, `${addr}/team/rich:1`, { policy: 'sometimes' }), 'InvalidArgument');
    await rejectsWith(() => Image.pullLocal(backend, 'Bad/Ref'), 'InvalidReference');
    assert.deepEqual(await Image.listLocal(backend), []);
  });
});
