// serve() and `microsandbox serve` from Node: the unix socket by default,
// TCP only with a token, our own Image.pull fetching through a served
// cache as its docker.io mirror, the CLI running until SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  CLI, Image, LocalBackend, MANIFEST, addon, blobFiles, fixture, freePort, nodeAsync, rejectsWith, tempDir,
  tempHome,
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
