// serve() and `microsandbox serve` from Node: the unix socket by default,
// TCP only with a token, our own Image.pull fetching through a served
// cache as its docker.io mirror, the CLI running until SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
  CLI, Image, LocalBackend, MANIFEST, addon, blobFiles, fixture, freePort, nodeAsync, rejectsWith, sleep,
  tempDir, tempHome,
} from './helpers.mjs';

const { serve } = addon;
const TOKEN = 'node-test-token-0123456789';

/** GET over a unix socket: { status, body }. */
function unixGet(socketPath, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('serve() listens on $MSB_HOME/serve.sock by default, answers as the API does, and closes', async (t) => {
  const home = tempHome(t);
  const backend = new LocalBackend({ home });
  await Image.loadLocal(backend, fixture('rich'));
  const server = await serve({ home });
  const sock = path.join(home, 'serve.sock');
  assert.equal(server.address, `unix:${sock}`);
  assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
  const { status, body } = await unixGet(sock, '/v1/images');
  assert.equal(status, 200);
  const listed = (await Image.listLocal(backend)).map((h) => h.toJSON());
  assert.deepEqual(JSON.parse(body), JSON.parse(JSON.stringify(listed)));
  const minibox = await unixGet(sock, '/images');
  assert.deepEqual(JSON.parse(minibox.body), [{ name: 'rich:latest', size_bytes: MANIFEST.rich.totalSize }]);
  await server.close();
  await server.close(); // twice is a no-op
  assert.ok(!fs.existsSync(sock));
});

test('serve() rejects bad options with coded errors, never a throw', async (t) => {
  const home = tempHome(t);
  await rejectsWith(() => serve({ home, listen: '127.0.0.1:0' }), 'InvalidArgument', /token/);
  await rejectsWith(() => serve({ home, listen: 'somewhere' }), 'InvalidArgument', /unix:PATH/);
  await rejectsWith(() => serve({ home, listen: '127.0.0.1:0', token: 'short' }), 'InvalidArgument', /at least 16/);
  await rejectsWith(() => serve({ home, maxConcurrentPulls: 0 }), 'InvalidArgument', /maxConcurrentPulls/);
  await rejectsWith(() => serve({ home, listen: 8080 }), 'InvalidArgument', /listen/);
  await rejectsWith(() => serve('nope'), 'InvalidArgument', /options/);
  await rejectsWith(
    () => serve({ home, listen: '127.0.0.1:0', tokenFile: path.join(home, 'absent') }),
    'Io',
    /token file/,
  );
});

test("Image.pull fetches from a served cache as its docker.io mirror, byte-identical by digest", async (t) => {
  const served = tempHome(t);
  await Image.loadLocal(new LocalBackend({ home: served }), fixture('rich'));
  const port = await freePort();
  const server = await serve({ home: served, listen: `127.0.0.1:${port}`, token: TOKEN });
  t.after(() => server.close());
  const peer = tempHome(t);
  const dockerConfig = tempDir(t);
  const auth = Buffer.from(`x:${TOKEN}`).toString('base64');
  fs.writeFileSync(path.join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [`127.0.0.1:${port}`]: { auth } } }));
  // In a child whose every other request would go to a dead local proxy:
  // the pull must be answered by the mirror, never by Docker Hub.
  const script = `
    const { Image, LocalBackend } = require(process.env.MSB_ADDON);
    Image.pullLocal(new LocalBackend({ home: ${JSON.stringify(peer)} }), 'rich', {
      mirrors: { 'docker.io': ['http://127.0.0.1:${port}'] },
      dockerConfig: ${JSON.stringify(dockerConfig)},
    }).then((h) => console.log(JSON.stringify(h)), (e) => { console.error(e.code, e.message); process.exit(1); });`;
  const r = await nodeAsync(script, { ALL_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1' });
  assert.equal(r.status, 0, r.stderr);
  const handle = JSON.parse(r.stdout);
  assert.equal(handle.manifestDigest, MANIFEST.rich.manifestDigest);
  assert.equal(handle.reference, 'rich:latest');
  assert.deepEqual(blobFiles(peer), blobFiles(served));
  const report = await Image.verifyLocal(new LocalBackend({ home: peer }));
  assert.ok(report.clean);
});

/** Spawns the CLI's serve; resolves once it says where it listens. */
function startCli(args, env = {}) {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const listening = new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      if (/listening on /.test(stderr)) resolve();
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  listening.catch(() => {}); // a start meant to fail is awaited through `exited`
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, listening, exited, stderr: () => stderr };
}

test('microsandbox serve runs until SIGTERM, logs one JSON line per request, and refuses TCP without a token', async (t) => {
  const home = tempHome(t);
  await Image.loadLocal(new LocalBackend({ home }), fixture('rich'));
  const tokenFile = path.join(tempDir(t), 'token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const port = await freePort();
  const cli = startCli(['--listen', `127.0.0.1:${port}`, '--token-file', tokenFile, '--home', home]);
  await cli.listening;
  const ok = await fetch(`http://127.0.0.1:${port}/images`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200);
  assert.equal((await ok.json())[0].name, 'rich:latest');
  const refused = await fetch(`http://127.0.0.1:${port}/images`);
  assert.equal(refused.status, 401);
  assert.equal(refused.headers.get('www-authenticate'), 'Bearer realm="microsandbox"');
  const registry = await fetch(`http://127.0.0.1:${port}/v2/library/rich/tags/list`, {
    headers: { Authorization: `Basic ${Buffer.from(`any:${TOKEN}`).toString('base64')}` },
  });
  assert.deepEqual(await registry.json(), { name: 'library/rich', tags: ['latest'] });
  cli.child.kill('SIGTERM');
  const { code } = await cli.exited;
  assert.equal(code, 0, cli.stderr());
  const lines = cli.stderr().split('\n').filter((l) => l.startsWith('{'));
  assert.equal(lines.length, 3, cli.stderr());
  const entries = lines.map((l) => JSON.parse(l));
  assert.deepEqual(entries.map((e) => e.status), [200, 401, 200]);
  assert.ok(entries.every((e) => e.method === 'GET' && typeof e.ms === 'number'));
  assert.ok(!cli.stderr().includes(TOKEN), 'the token is never logged');

  // No token on TCP: exit 1 with the coded error; a bad flag: exit 2.
  const noToken = startCli(['--listen', '127.0.0.1:0', '--home', home], { MSB_API_TOKEN: '', MINIBOX_API_TOKEN: '' });
  const refusedStart = await noToken.exited;
  assert.equal(refusedStart.code, 1);
  assert.match(noToken.stderr(), /^error: InvalidArgument: listening on TCP needs an API token/m);
  const bad = startCli(['--bogus']);
  assert.equal((await bad.exited).code, 2);
  assert.match(bad.stderr(), /unknown option --bogus/);
});

/** A tar of one file `name` holding `bytes`. */
function tarOf(name, bytes) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  const oct = (v, off, len) => h.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, len, 'ascii');
  oct(0o644, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(bytes.length, 124, 12);
  oct(0, 136, 12);
  h.fill(0x20, 148, 156);
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  const pad = Buffer.alloc((512 - (bytes.length % 512)) % 512);
  return Buffer.concat([h, bytes, pad, Buffer.alloc(1024)]);
}

/** An OCI layout of one image `big` whose one (uncompressed) layer is `mib` MiB of random bytes. */
function bigLayout(dir, mib) {
  const blobs = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (bytes) => {
    const hex = crypto.createHash('sha256').update(bytes).digest('hex');
    fs.writeFileSync(path.join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const layer = put(tarOf('big.bin', crypto.randomBytes(mib << 20)));
  const config = put(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })));
  const manifest = put(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  })));
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest,
      annotations: { 'org.opencontainers.image.ref.name': 'big' },
    }],
  }));
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return layer;
}

/** The server's resident memory in bytes, from /proc/<pid>/status. */
function vmRss(pid) {
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1];
  return Number(kib) * 1024;
}

test('1000 clients that GET a /v2 blob and never read pin little memory, and a normal client is still served', { timeout: 120_000 }, async (t) => {
  const home = tempHome(t);
  const layout = tempDir(t);
  const layer = bigLayout(layout, 8);
  await Image.loadLocal(new LocalBackend({ home }), layout, { reference: 'big' });
  const tokenFile = path.join(tempDir(t), 'token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const port = await freePort();
  const cli = startCli(['--listen', `127.0.0.1:${port}`, '--token-file', tokenFile, '--home', home, '--public-registry', '-q']);
  t.after(() => cli.child.kill('SIGKILL'));
  await cli.listening;
  const url = `/v2/library/big/blobs/${layer.digest}`;
  const idle = vmRss(cli.child.pid);

  // 1000 sockets, opened 100 at a time, each sending one GET and then
  // reading nothing (paused: Node stops reading the descriptor).
  const stalled = [];
  t.after(() => stalled.forEach((s) => s.destroy()));
  const STALLED = 1000;
  for (let batch = 0; batch < STALLED / 100; batch++) {
    await Promise.all(Array.from({ length: 100 }, () => new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.pause();
        s.write(`GET ${url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, resolve);
      });
      s.on('error', reject);
      stalled.push(s);
    })));
  }
  // Sample the server's memory while every answer is as far as it gets.
  let peak = 0;
  for (let i = 0; i < 20; i++) {
    await sleep(200);
    peak = Math.max(peak, vmRss(cli.child.pid));
  }
  const MiB_ = 1 << 20;
  t.diagnostic(`server RSS: ${(idle / MiB_).toFixed(1)} MiB idle, ${(peak / MiB_).toFixed(1)} MiB peak under ${STALLED} stalled blob GETs`);
  assert.ok(peak < 200 * MiB_, `server RSS ${(peak / MiB_).toFixed(1)} MiB under ${STALLED} stalled clients`);
  assert.ok(stalled.every((s) => !s.destroyed), 'the stalled sockets are still open');

  // A normal client meanwhile gets the whole blob, byte for byte.
  const r = await fetch(`http://127.0.0.1:${port}${url}`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(r.status, 200);
  const body = Buffer.from(await r.arrayBuffer());
  assert.equal(body.length, layer.size);
  assert.equal(`sha256:${crypto.createHash('sha256').update(body).digest('hex')}`, layer.digest);

  stalled.forEach((s) => s.destroy());
  cli.child.kill('SIGTERM');
  assert.equal((await cli.exited).code, 0, cli.stderr());
});

/** A request over a unix socket: { status, body }. */
function unixRequest(socketPath, method, urlPath, body = '') {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, method }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('load and save name host paths only inside allowPaths (none by default), a save replaces only with overwrite', async (t) => {
  const home = tempHome(t);
  await Image.loadLocal(new LocalBackend({ home }), fixture('rich'));
  await rejectsWith(() => serve({ home, allowPaths: ['relative/dir'] }), 'InvalidArgument', /absolute/);
  await rejectsWith(() => serve({ home, allowPaths: [path.join(home, 'absent')] }), 'InvalidArgument', /no such directory/);
  await rejectsWith(() => serve({ home, allowPaths: 7 }), 'InvalidArgument', /allowPaths/);
  await rejectsWith(() => serve({ home, maxConnections: 0 }), 'InvalidArgument', /maxConnections/);
  const sock = path.join(home, 'serve.sock');

  // None allowed: refused, with the stable code, and nothing of the file said.
  const closed = await serve({ home });
  const shadow = path.join(tempDir(t), 'shadow');
  fs.writeFileSync(shadow, `root:$6$${'S'.repeat(600)}:19000:0:99999:7:::\n`);
  let r = await unixRequest(sock, 'POST', `/images/load?path=${shadow}`);
  assert.equal(r.status, 400);
  assert.match(r.body, /--allow-path/);
  r = await unixRequest(sock, 'POST', '/v1/images/save', JSON.stringify({ references: 'rich', path: path.join(tempDir(t), 'x.tar') }));
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.body).code, 'InvalidArgument');
  await closed.close();

  const allowed = tempDir(t);
  const server = await serve({ home, allowPaths: [allowed] });
  t.after(() => server.close());
  const archive = path.join(allowed, 'rich.tar');
  r = await unixRequest(sock, 'POST', `/images/save?image=rich&path=${archive}`);
  assert.equal(r.status, 200, r.body);
  r = await unixRequest(sock, 'POST', `/images/save?image=rich&path=${archive}`);
  assert.equal(r.status, 400, r.body);
  assert.match(r.body, /exists/);
  r = await unixRequest(sock, 'POST', `/images/save?image=rich&path=${archive}&overwrite=true`);
  assert.equal(r.status, 200, r.body);
  r = await unixRequest(sock, 'POST', '/v1/images/load', JSON.stringify({ path: archive }));
  assert.equal(r.status, 200, r.body);
  assert.equal(JSON.parse(r.body)[0].reference, 'rich:latest');
  // Outside, by `..` or through a link: refused the same way.
  fs.symlinkSync(shadow, path.join(allowed, 'link'));
  for (const p of [shadow, `${allowed}/../${path.basename(path.dirname(shadow))}/shadow`, path.join(allowed, 'link')]) {
    r = await unixRequest(sock, 'POST', '/v1/images/load', JSON.stringify({ path: p }));
    assert.equal(r.status, 400, `${p}: ${r.body}`);
    assert.equal(JSON.parse(r.body).code, 'InvalidArgument');
    assert.ok(!r.body.includes('SSSSSSSSSS'), r.body);
  }
  // Inside, a file that is no archive: its path and what is wrong, never its bytes.
  fs.copyFileSync(shadow, path.join(allowed, 'shadow'));
  r = await unixRequest(sock, 'POST', `/images/load?path=${path.join(allowed, 'shadow')}`);
  assert.equal(r.status, 400);
  assert.match(r.body, /shadow: unreadable archive: not a tar archive/);
  assert.ok(!r.body.includes('SSSSSSSSSS') && !r.body.includes('root:'), r.body);
});

test('microsandbox serve --allow-path DIR (repeatable) lets clients save there and nowhere else', async (t) => {
  const home = tempHome(t);
  await Image.loadLocal(new LocalBackend({ home }), fixture('rich'));
  const [a, b, other] = [tempDir(t), tempDir(t), tempDir(t)];
  const sock = path.join(tempDir(t), 's.sock');
  const cli = startCli(['--listen', `unix:${sock}`, '--home', home, '--allow-path', a, '--allow-path', b, '-q']);
  t.after(() => cli.child.kill('SIGKILL'));
  await cli.listening;
  for (const dir of [a, b]) {
    const r = await unixRequest(sock, 'POST', `/images/save?image=rich&path=${path.join(dir, 'r.tar')}`);
    assert.equal(r.status, 200, r.body);
  }
  const r = await unixRequest(sock, 'POST', `/images/save?image=rich&path=${path.join(other, 'r.tar')}`);
  assert.equal(r.status, 400, r.body);
  assert.deepEqual(fs.readdirSync(other), []);
  cli.child.kill('SIGTERM');
  assert.equal((await cli.exited).code, 0, cli.stderr());
  const bad = startCli(['--max-connections', '0']);
  assert.equal((await bad.exited).code, 2);
  assert.match(bad.stderr(), /--max-connections/);
});
