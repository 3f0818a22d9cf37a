// Image.pull against a real registry: Debian's docker-registry on
// 127.0.0.1, filled with skopeo. Fails, never skips, without the package.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  FIXTURES, MANIFEST, assertBlobsVerified, freePort, freshBackend, nodeAsync, pushFixture, rejectsWith, startRegistry,
  tempDir, tempHome, tmpEntries,
} from './helpers.mjs';
import { Image, LocalBackend } from '../index.js';

describe('pull from a registry', () => {
  let registry;
  let addr;
  before(async () => {
    registry = await startRegistry();
    addr = registry.addr;
    pushFixture(addr, 'rich:rich', 'team/rich:1');
  });
  after(() => registry?.stop());

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

  /**
   * A proxy in front of the registry that holds blob answers back, counts
   * blob requests by digest and records their `Range` headers. The answer
   * for a blob in the set `proxy.stall` stops after half its body, and the
   * connection stays open.
   */
  async function countingProxy(t, delayMs) {
    const counts = new Map();
    const ranges = [];
    const proxy = { counts, ranges, stall: new Set(), halfSent: 0 };
    const open = new Set();
    const server = http.createServer((req, res) => {
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(req.url)?.[1];
      if (blob) {
        counts.set(blob, (counts.get(blob) ?? 0) + 1);
        ranges.push([blob, req.headers.range ?? null]);
      }
      const forward = () => {
        const up = http.request({ host: '127.0.0.1', port: Number(addr.split(':')[1]), path: req.url, method: req.method, headers: req.headers }, (ur) => {
          res.writeHead(ur.statusCode, ur.headers);
          if (blob && proxy.stall.has(blob) && ur.statusCode === 200) {
            const chunks = [];
            ur.on('data', (c) => chunks.push(c));
            ur.on('end', () => {
              const body = Buffer.concat(chunks);
              res.write(body.subarray(0, body.length >> 1));
              proxy.halfSent += 1;
              open.add(res); // never ended: the client waits for the rest
            });
            return;
          }
          ur.pipe(res);
        });
        up.on('error', () => res.destroy());
        req.pipe(up);
      };
      if (blob) setTimeout(forward, delayMs); else forward();
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    });
    proxy.addr = `127.0.0.1:${server.address().port}`;
    return proxy;
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

  test('a pull killed midway (SIGKILL) leaves its bytes; the next pull asks only for the rest', async (t) => {
    const proxy = await countingProxy(t, 0);
    proxy.stall = new Set(MANIFEST.rich.layers);
    const home = tempHome(t);
    const ref = `${proxy.addr}/team/rich:1`;
    const child = spawn(process.execPath, ['-e', `
      const { Image, LocalBackend } = require(process.env.MSB_ADDON);
      Image.pullLocal(new LocalBackend({ home: process.env.H }), process.env.REF).then(() => process.exit(0), () => process.exit(3));`], {
      env: { ...process.env, MSB_ADDON: path.resolve('index.js'), H: home, REF: ref },
      stdio: 'ignore',
    });
    const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve(signal)));
    // Kill it once every layer has come halfway.
    const want = MANIFEST.rich.layers.length;
    for (let i = 0; i < 400 && proxy.halfSent < want; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(proxy.halfSent >= want, `only ${proxy.halfSent} halves were sent`);
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGKILL');
    assert.equal(await closed, 'SIGKILL');
    const left = tmpEntries(home).filter((n) => n.startsWith('partial-'));
    assert.ok(left.length >= want, JSON.stringify(tmpEntries(home)));

    proxy.stall = new Set();
    proxy.ranges.length = 0;
    const backend = new LocalBackend({ home });
    const h = await Image.pullLocal(backend, ref);
    assert.equal(h.manifestDigest, MANIFEST.rich.manifestDigest);
    for (const layer of MANIFEST.rich.layers) {
      const asked = proxy.ranges.filter(([d]) => d === layer);
      assert.equal(asked.length, 1, JSON.stringify(proxy.ranges));
      const from = Number(/^bytes=(\d+)-$/.exec(asked[0][1] ?? '')?.[1]);
      assert.ok(from > 0, `layer ${layer} was asked for from the start: ${asked[0][1]}`);
    }
    assertBlobsVerified(home);
    // The killed writers' own temporaries go with the next prune.
    assert.deepEqual(tmpEntries(home).filter((n) => n.startsWith('partial-')), []);
    await Image.pruneLocal(backend);
    assert.deepEqual(tmpEntries(home), []);
  });

  test('the CLI pulls: a progress bar on a terminal, JSON on a pipe, coded errors', (t) => {
    const cli = path.resolve('bin', 'microsandbox.js');
    const home = tempHome(t);
    const ref = `${addr}/team/rich:1`;
    const command = `'${process.execPath}' '${cli}' image pull --home '${home}' '${ref}'`;
    const tty = spawnSync('script', ['-qefc', command, '/dev/null'], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm' } });
    assert.equal(tty.status, 0, tty.stdout);
    assert.match(tty.stdout, /\x1b\[2K/, 'the bar is redrawn in place');
    assert.match(tty.stdout, /\[=*[=>] *\]/);
    assert.match(tty.stdout, /\S+B\/s/);
    assert.match(tty.stdout, new RegExp(`${ref} ${MANIFEST.rich.manifestDigest}`));
    const other = tempHome(t);
    const piped = spawnSync(process.execPath, [cli, 'image', 'pull', '--json', '--home', other, ref], { encoding: 'utf8' });
    assert.equal(piped.status, 0, piped.stderr);
    assert.equal(piped.stderr, '');
    const h = JSON.parse(piped.stdout)[0];
    assert.equal(h.manifestDigest, MANIFEST.rich.manifestDigest);
    const missing = spawnSync(process.execPath, [cli, 'image', 'pull', '--home', other, `${addr}/team/rich:nope`], { encoding: 'utf8' });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^error: ImageNotFound: image not found: /m);
  });
});
