// Image.pull against a real registry: Debian's docker-registry on
// 127.0.0.1, filled with skopeo. Fails, never skips, without the package.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
  FIXTURES, MANIFEST, assertBlobsVerified, freshBackend, nodeAsync, rejectsWith, tempDir, tempHome, tmpEntries,
} from './helpers.mjs';
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

  /** A proxy in front of the registry that holds blob answers back and counts blob requests by digest. */
  async function countingProxy(t, delayMs) {
    const counts = new Map();
    const server = http.createServer((req, res) => {
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(req.url)?.[1];
      if (blob) counts.set(blob, (counts.get(blob) ?? 0) + 1);
      const forward = () => {
        const up = http.request({ host: '127.0.0.1', port: Number(addr.split(':')[1]), path: req.url, method: req.method, headers: req.headers }, (ur) => {
          res.writeHead(ur.statusCode, ur.headers);
          ur.pipe(res);
        });
        up.on('error', () => res.destroy());
        req.pipe(up);
      };
      if (blob) setTimeout(forward, delayMs); else forward();
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise((resolve) => server.close(resolve)));
    return { addr: `127.0.0.1:${server.address().port}`, counts };
  }

  test('two processes pulling one image into one home fetch each blob once', async (t) => {
    const proxy = await countingProxy(t, 300);
    const home = tempHome(t);
    const startAt = Date.now() + 700;
    const script = `
      const { Image, LocalBackend } = require(process.env.MSB_ADDON);
      const backend = new LocalBackend({ home: process.env.H });
      setTimeout(() => {
        Image.pullLocal(backend, process.env.REF).then(
          (h) => console.log(h.manifestDigest),
          (e) => { console.error(e.code, e.message); process.exit(3); });
      }, Math.max(0, Number(process.env.START_AT) - Date.now()));`;
    const env = { H: home, REF: `${proxy.addr}/team/rich:1`, START_AT: String(startAt) };
    const [a, b] = await Promise.all([nodeAsync(script, env), nodeAsync(script, env)]);
    for (const r of [a, b]) {
      assert.equal(r.status, 0, `child failed: ${r.stderr}`);
      assert.equal(r.stdout.trim(), MANIFEST.rich.manifestDigest);
    }
    for (const layer of MANIFEST.rich.layers) {
      assert.equal(proxy.counts.get(layer), 1, `layer ${layer}: ${JSON.stringify([...proxy.counts])}`);
    }
    assertBlobsVerified(home);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('mirrors: an object of registry hosts to mirror URLs; the mirror serves the pull', async (t) => {
    const proxy = await countingProxy(t, 0);
    const { backend } = freshBackend(t);
    // The name is an address nothing listens on: only the mirror can answer.
    const dead = await freePort();
    const name = `127.0.0.1:${dead}/team/rich:1`;
    const h = await Image.pullLocal(backend, name, { mirrors: { [`127.0.0.1:${dead}`]: [`http://${proxy.addr}`] } });
    assert.equal(h.manifestDigest, MANIFEST.rich.manifestDigest);
    assert.equal(h.reference, name);
    assert.ok(proxy.counts.size > 0);
    await rejectsWith(() => Image.pullLocal(backend, name, { policy: 'always', mirrors: ['x'] }), 'InvalidArgument');
    await rejectsWith(() => Image.pullLocal(backend, name, { policy: 'always', mirrors: { a: 'x' } }), 'InvalidArgument');
    await rejectsWith(() => Image.pullLocal(backend, name, { policy: 'always', mirrors: { a: [1] } }), 'InvalidArgument');
    await rejectsWith(() => Image.pullLocal(backend, name, { policy: 'always', mirrors: { [`127.0.0.1:${dead}`]: ['ftp://m'] } }), 'InvalidArgument');
  });
});
