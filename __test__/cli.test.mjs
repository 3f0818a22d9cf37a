// The `microsandbox` CLI, run as a child process (node bin/microsandbox.js)
// against temporary homes with real images: every command and flag, JSON
// output, exit codes, archives through stdin and stdout, and the prompt and
// progress bar through a pseudo-terminal (`script`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import {
  CLI, MANIFEST, RICH_CONFIG, ROOT, blobFiles, fixture, onTerminal, pushFixture, runCli, startRegistry, tempDir,
  tempHome,
} from './helpers.mjs';
import { Image, LocalBackend } from '../index.js';

const { ago, humanSize } = createRequire(import.meta.url)('../bin/cli/format.js');

/** `12.3kB` -> 12300: a size as the CLI prints it, back to bytes. */
function parseSize(text) {
  const m = /^(\d+(?:\.\d+)?)(B|kB|MB|GB|TB)$/.exec(text);
  assert.ok(m, `not a size: ${text}`);
  return Number(m[1]) * 1000 ** ['B', 'kB', 'MB', 'GB', 'TB'].indexOf(m[2]);
}

const cli = runCli;

function ok(r) {
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  return r;
}

function loaded(t, ...fixtures) {
  const home = tempHome(t);
  for (const f of fixtures) ok(cli(['image', 'load', '-q', fixture(f)], { home }));
  return home;
}

/**
 * A copy of the `pair` layout whose index names `n` references, `many-0`
 * to `many-<n-1>`, taking turns on its two images: output long enough to
 * fill a pipe.
 */
function manyRefs(t, n) {
  const dir = path.join(tempDir(t), 'many');
  fs.cpSync(fixture('pair'), dir, { recursive: true });
  const file = path.join(dir, 'index.json');
  const index = JSON.parse(fs.readFileSync(file, 'utf8'));
  const images = index.manifests;
  index.manifests = Array.from({ length: n }, (_, i) => ({
    ...images[i % images.length],
    annotations: { 'org.opencontainers.image.ref.name': `many-${i}` },
  }));
  fs.writeFileSync(file, JSON.stringify(index));
  return dir;
}

/**
 * An OCI layout of one image, `plain`, whose single layer is an
 * uncompressed tar: a layer with no `verify` phase.
 */
function plainLayerLayout(t) {
  const dir = path.join(tempDir(t), 'plain');
  const blobs = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (bytes) => {
    const buf = Buffer.from(bytes);
    const hex = crypto.createHash('sha256').update(buf).digest('hex');
    fs.writeFileSync(path.join(blobs, hex), buf);
    return { digest: `sha256:${hex}`, size: buf.length };
  };
  const src = tempDir(t);
  fs.writeFileSync(path.join(src, 'hello.txt'), 'hello\n');
  const tar = spawnSync('tar', ['--format=ustar', '--owner=0', '--group=0', '--mtime=@0', '-cf', '-', '-C', src, 'hello.txt']);
  assert.equal(tar.status, 0, String(tar.stderr));
  const layer = put(tar.stdout);
  const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch] ?? process.arch;
  const config = put(JSON.stringify({ architecture: arch, os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] } }));
  const manifest = put(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  }));
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'plain' } }],
  }));
  return { dir, layer };
}

/**
 * Runs `CLI args | reader` in bash with pipefail; returns the CLI's own exit
 * status (PIPESTATUS[0]), the status of the pipeline, and the CLI's stderr.
 */
function throughPipe(t, args, reader, { home, env = {} }) {
  const err = path.join(tempDir(t), 'stderr');
  const r = spawnSync(
    'bash',
    ['-o', 'pipefail', '-c', `"$@" 2>"$MSB_ERR" | ${reader} >/dev/null; s=("\${PIPESTATUS[@]}"); echo "\${s[0]}"; exit "\${s[0]}"`, 'bash', process.execPath, CLI, ...args],
    { env: { ...process.env, MSB_HOME: home, MSB_ERR: err, ...env }, encoding: 'utf8' },
  );
  return { status: Number(r.stdout.trim()), pipeline: r.status, stderr: fs.readFileSync(err, 'utf8') };
}

describe('cli: help and usage', () => {
  test('help exits 0; usage errors exit 2 with the help', () => {
    const top = cli(['--help']);
    assert.equal(top.status, 0);
    for (const c of ['ls', 'inspect', 'rm', 'prune', 'df', 'pull', 'load', 'save', 'leases']) assert.match(top.stdout, new RegExp(`\\b${c}\\b`));
    assert.equal(cli([]).status, 2);
    const help = cli(['image', 'prune', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--max-size/);
    for (const args of [
      ['images'],
      ['image'],
      ['image', 'frobnicate'],
      ['image', 'ls', '--bogus'],
      ['image', 'ls', 'extra'],
      ['image', 'inspect'],
      ['image', 'rm'],
      ['image', 'load'],
      ['image', 'prune', '--max-size'],
      ['image', 'leases', 'rm'],
    ]) {
      const r = cli(args, { home: tempHome() });
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^error: /, args.join(' '));
      assert.match(r.stderr, /Usage: microsandbox/, args.join(' '));
    }
  });
});

describe('cli: a closed stdout', () => {
  test('ls, prune, inspect and save into `head` end quietly with exit 0, output longer than a pipe holds', (t) => {
    const home = tempHome(t);
    const refs = Array.from({ length: 4000 }, (_, i) => `many-${i}`);
    ok(cli(['image', 'load', '-q', manyRefs(t, refs.length)], { home }));
    const cases = [
      [['image', 'ls'], 'head -1'],
      [['image', 'prune', '-a', '--dry-run'], 'head -1'],
      [['image', 'inspect', ...refs.slice(0, 200)], 'head -c 10'],
      [['image', 'save', ...refs], 'head -c 100'],
    ];
    const tmp = tempDir(t);
    for (const [args, reader] of cases) {
      const what = `${args.slice(0, 3).join(' ')} | ${reader}`;
      const full = cli(args, { home, raw: true });
      assert.equal(full.status, 0, `${what}: ${full.stderr}`);
      assert.ok(full.stdout.length > 128 << 10, `${what}: ${full.stdout.length} bytes do not overfill a pipe`);
      const r = throughPipe(t, args, reader, { home, env: { TMPDIR: tmp } });
      assert.equal(r.stderr, '', what);
      assert.equal(r.status, 0, what);
      assert.equal(r.pipeline, 0, what);
    }
    // The cache is as it was: the dry run removed nothing, save left no temporary behind.
    assert.deepEqual(fs.readdirSync(tmp), []);
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout.trim().split('\n').length, refs.length);
  });

  test('an unexpected exception prints `error: message`, never a stack trace, and exits 1', (t) => {
    const home = tempHome(t);
    // A stdout that cannot be written (a read-only descriptor) is such an exception.
    const r = spawnSync('bash', ['-c', 'exec 1</dev/null; exec "$@"', 'bash', process.execPath, CLI, 'image', 'ls'], {
      env: { ...process.env, MSB_HOME: home },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^error: \S.*\n$/m);
    assert.doesNotMatch(r.stderr, /^\s+at |node:internal|Node\.js v/m);
  });
});

describe('cli: usage errors', () => {
  test('option errors are told in our words, with the command\'s help, exit 2', () => {
    for (const [args, said] of [
      [['image', 'ls', '--x'], 'unknown option --x'],
      [['image', 'ls', '-qz'], 'unknown option -z'],
      [['image', 'ls', '--home'], '--home needs a value'],
      [['image', 'save', 'app', '-o'], '--output needs a value'],
      [['image', 'prune', '--max-size'], '--max-size needs a value'],
      [['image', 'df', '--json=yes'], '--json takes no value'],
      [['image', 'ls', '--home', '--json'], '--home needs a value (write --home=VALUE for one that starts with -)'],
    ]) {
      const what = args.join(' ');
      const r = cli(args, { home: tempHome() });
      assert.equal(r.status, 2, `${what}: ${r.stderr}`);
      const [first, blank, usage] = r.stderr.split('\n');
      assert.equal(first, `error: ${said}`, what);
      assert.equal(blank, '', what);
      assert.match(usage, new RegExp(`^Usage: microsandbox image ${args[1]} `), what);
      assert.doesNotMatch(r.stderr, /positional|'/, what);
      assert.equal(r.stdout, '', what);
    }
  });
});

describe('cli: help', () => {
  test('the top help gives each command its one-line summary, a whole sentence', () => {
    const top = ok(cli(['image', '--help'])).stdout.split('\n');
    const from = top.indexOf('Commands:');
    assert.ok(from > 0, top.join('\n'));
    const rows = top.slice(from + 1, top.indexOf('', from));
    assert.deepEqual(rows.map((l) => l.trim().split(/\s+/)[0]), ['ls', 'inspect', 'rm', 'prune', 'gc', 'purge', 'df', 'pull', 'push', 'materialize', 'load', 'save', 'verify', 'leases']);
    for (const row of rows) {
      const [, name, summary] = /^ {2}(\S+) +(\S.*)$/.exec(row) ?? [];
      assert.ok(summary, `not a command line: ${row}`);
      assert.ok(row.length <= 80, `${name}: longer than a terminal line`);
      assert.match(summary, /[^,;:\s]\.$/, `${name}: "${summary}" does not end a sentence`);
      assert.doesNotMatch(summary, /\b(and|or|the|a|to|of|with|moves?)\.$/i, `${name}: "${summary}" is cut`);
      // The same summary heads the command's own help.
      const own = ok(cli(['image', name, '--help'])).stdout.split('\n');
      assert.equal(own[2], summary, `${name} --help`);
    }
  });
});

describe('cli: npx', () => {
  test('npx microsandbox runs this package\'s bin', (t) => {
    const home = loaded(t, 'rich');
    const r = spawnSync('npx', ['--no-install', 'microsandbox', 'image', 'ls', '-q', '--home', home], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'rich:latest\n');
  });
});

describe('cli: ls, inspect, rm, leases', () => {
  test('ls prints a table, -q references, --digests full digests, --json the handles', (t) => {
    const home = loaded(t, 'pair', 'rich');
    const table = ok(cli(['image', 'ls'], { home })).stdout.trim().split('\n');
    assert.match(table[0], /^REFERENCE\s+DIGEST\s+PLATFORM\s+SIZE\s+CREATED\s+ADDED\s+LAST USED$/);
    assert.equal(table.length, 4);
    const rich = table.find((l) => l.startsWith('rich:latest'));
    // CREATED: the image's build time (its config's, years ago); ADDED: the load, just now.
    const built = ago(new Date(RICH_CONFIG.created));
    assert.match(built, /^\d+ years ago$/);
    assert.match(rich, new RegExp(`${MANIFEST.rich.manifestDigest.slice(7, 19)}\\s+linux/amd64\\s+\\S+B\\s+${built}\\s+(just now|\\d+ seconds? ago)\\s+never$`));
    assert.deepEqual(ok(cli(['image', 'list', '-q'], { home })).stdout.trim().split('\n').sort(), ['app:latest', 'base:latest', 'rich:latest']);
    assert.match(ok(cli(['image', 'ls', '--digests'], { home })).stdout, new RegExp(MANIFEST.rich.manifestDigest));
    const json = JSON.parse(ok(cli(['image', 'ls', '--json'], { home })).stdout);
    const byRef = Object.fromEntries(json.map((h) => [h.reference, h]));
    assert.equal(byRef['rich:latest'].manifestDigest, MANIFEST.rich.manifestDigest);
    assert.equal(byRef['rich:latest'].sizeBytes, MANIFEST.rich.totalSize);
    assert.equal(byRef['rich:latest'].lastUsedAt, null);
    assert.ok(!Number.isNaN(Date.parse(byRef['rich:latest'].createdAt)));
    // --home wins over MSB_HOME.
    const other = tempHome(t);
    assert.equal(ok(cli(['image', 'ls', '-q', '--home', other], { home })).stdout, '');
  });

  test('ls of an entry skopeo wrote into the cache: CREATED from its config, ADDED unknown', (t) => {
    const home = loaded(t, 'pair');
    const r = spawnSync('skopeo', ['copy', '--insecure-policy', `oci:${fixture('rich')}:rich`, `oci:${path.join(home, 'cache', 'oci')}:umoci-tag`], { encoding: 'utf8' });
    assert.equal(r.status, 0, `skopeo is required: ${r.stderr}`);
    const [head, ...rows] = ok(cli(['image', 'ls'], { home })).stdout.trim().split('\n');
    const column = (name) => head.indexOf(name);
    const cell = (row, name, next) => row.slice(column(name), column(next)).trim();
    const foreign = rows.find((l) => l.startsWith('umoci-tag:latest'));
    assert.ok(foreign, rows.join('\n'));
    assert.equal(cell(foreign, 'CREATED', 'ADDED'), ago(new Date(RICH_CONFIG.created)));
    assert.equal(cell(foreign, 'ADDED', 'LAST USED'), '-');
    assert.equal(foreign.slice(column('LAST USED')).trim(), 'never');
    const ours = rows.find((l) => l.startsWith('app:latest'));
    assert.match(cell(ours, 'ADDED', 'LAST USED'), /^(just now|\d+ seconds? ago)$/);
    const json = JSON.parse(ok(cli(['image', 'ls', '--json'], { home })).stdout).find((h) => h.reference === 'umoci-tag:latest');
    assert.equal(json.createdAt, null);
    assert.equal(json.imageCreatedAt, new Date(RICH_CONFIG.created).toISOString());
  });

  test('inspect prints a JSON array; a missing image is an error and exit 1', (t) => {
    const home = loaded(t, 'rich');
    const out = JSON.parse(ok(cli(['image', 'inspect', 'rich', 'docker.io/library/rich:latest'], { home })).stdout);
    assert.equal(out.length, 2);
    assert.equal(out[0].handle.manifestDigest, MANIFEST.rich.manifestDigest);
    assert.equal(out[1].handle.reference, 'rich:latest');
    assert.equal(out[0].layers.length, MANIFEST.rich.layers.length);
    const r = cli(['image', 'inspect', 'rich', 'nope'], { home });
    assert.equal(r.status, 1);
    assert.equal(JSON.parse(r.stdout).length, 1);
    assert.equal(r.stderr, 'error: ImageNotFound: image not found: nope:latest\n');
    const bad = cli(['image', 'inspect', 'Bad/Ref'], { home });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error: InvalidReference: /);
  });

  test('rm removes each, reports each failure, exits 1 if any failed; -f takes a leased one', async (t) => {
    const home = loaded(t, 'pair', 'rich');
    const r = cli(['image', 'rm', 'app', 'nope', 'base'], { home });
    assert.equal(r.status, 1);
    assert.equal(r.stdout, 'Untagged: app\nUntagged: base\n');
    assert.match(r.stderr, /error: ImageNotFound: image not found: nope:latest/);
    await Image.acquireLocal(new LocalBackend({ home }), 'rich', { id: 'sbx-1' });
    const held = cli(['image', 'rm', 'rich'], { home });
    assert.equal(held.status, 1);
    assert.match(held.stderr, /^error: ImageInUse: .*sbx-1/);
    assert.deepEqual(JSON.parse(ok(cli(['image', 'rm', '-f', '--json', 'rich'], { home })).stdout), { removed: ['rich'] });
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout, '');
  });

  test('leases lists and releases', async (t) => {
    const home = loaded(t, 'rich');
    await Image.acquireLocal(new LocalBackend({ home }), 'rich', { id: 'sbx-7', kind: 'sandbox' });
    const table = ok(cli(['image', 'leases'], { home })).stdout;
    assert.match(table, /^ID\s+KIND\s+REFERENCE\s+DIGEST\s+CREATED\s+EXPIRES\n/);
    assert.match(table, /sbx-7\s+sandbox\s+rich:latest/);
    const json = JSON.parse(ok(cli(['image', 'leases', 'ls', '--json'], { home })).stdout);
    assert.equal(json[0].id, 'sbx-7');
    assert.equal(json[0].manifestDigest, MANIFEST.rich.manifestDigest);
    assert.equal(ok(cli(['image', 'leases', 'rm', 'sbx-7'], { home })).stdout, 'Released: sbx-7\n');
    const again = cli(['image', 'leases', 'rm', 'sbx-7'], { home });
    assert.equal(again.status, 1);
    assert.match(again.stderr, /no lease sbx-7/);
  });
});

describe('cli: a home that does not exist', () => {
  test('ls, inspect, df, verify and leases read it as empty and do not create it', (t) => {
    const home = path.join(tempDir(t), 'not', 'yet');
    const table = ok(cli(['image', 'ls'], { home })).stdout;
    assert.match(table, /^REFERENCE\s+DIGEST\s+PLATFORM\s+SIZE\s+CREATED\s+ADDED\s+LAST USED\n$/);
    assert.deepEqual(JSON.parse(ok(cli(['image', 'ls', '--json'], { home })).stdout), []);
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout, '');
    const missing = cli(['image', 'inspect', 'rich'], { home });
    assert.equal(missing.status, 1);
    assert.equal(missing.stderr, 'error: ImageNotFound: image not found: rich:latest\n');
    const df = ok(cli(['image', 'df', '-v'], { home })).stdout;
    assert.match(df, /^Images\s+0\s+0\s+0B\s+0B$/m);
    assert.match(df, /^Total on disk: 0B$/m);
    const usage = JSON.parse(ok(cli(['image', 'df', '--json'], { home })).stdout);
    assert.equal(usage.totalBytes, 0);
    assert.deepEqual(usage.images, []);
    assert.equal(ok(cli(['image', 'verify'], { home })).stdout, 'checked 0 blobs (0B): clean\n');
    assert.equal(JSON.parse(ok(cli(['image', 'verify', '--json'], { home })).stdout).clean, true);
    assert.match(ok(cli(['image', 'leases'], { home })).stdout, /^ID\s+KIND\s+REFERENCE\s+DIGEST\s+CREATED\s+EXPIRES\n$/);
    assert.deepEqual(JSON.parse(ok(cli(['image', 'leases', '--json'], { home })).stdout), []);
    assert.ok(!fs.existsSync(path.dirname(home)), `${path.dirname(home)} was created`);
  });
});

describe('cli: prune and df', () => {
  test('prune takes only dangling content by default, -a every unpinned image; --dry-run deletes nothing', (t) => {
    const home = loaded(t, 'pair', 'rich');
    const dangling = JSON.parse(ok(cli(['image', 'prune', '--json'], { home })).stdout);
    assert.deepEqual(dangling.removed, []);
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout.trim().split('\n').length, 3);
    const before = blobFiles(home);
    const dry = ok(cli(['image', 'prune', '-a', '--dry-run'], { home })).stdout;
    assert.match(dry, /^Would remove: /m);
    assert.match(dry, /Total reclaimable space: \S+B\n$/);
    assert.deepEqual(blobFiles(home), before);
    const real = ok(cli(['image', 'prune', '-a', '-f'], { home })).stdout;
    assert.match(real, /^Removed: rich:latest \(/m);
    assert.match(real, /Removed 3 references, 3 manifests, 3 configs, 5 layers/);
    assert.deepEqual(blobFiles(home), []);
  });

  test('prune --unused-for and --max-size choose images; bad values are errors', (t) => {
    const home = loaded(t, 'pair', 'rich');
    assert.deepEqual(JSON.parse(ok(cli(['image', 'prune', '--unused-for', '7d', '--json'], { home })).stdout).removed, []);
    const fit = JSON.parse(ok(cli(['image', 'prune', '--max-size', '1TB', '--json', '--dry-run'], { home })).stdout);
    assert.equal(fit.dryRun, true);
    assert.deepEqual(fit.removed, []);
    const zero = JSON.parse(ok(cli(['image', 'prune', '--max-size', '0', '--json'], { home })).stdout);
    assert.equal(zero.removed.length, 3);
    const bad = cli(['image', 'prune', '--max-size', 'lots'], { home });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error: InvalidArgument: invalid size "lots"/);
  });

  test('on a terminal prune asks first: n aborts, y goes on', (t) => {
    const home = loaded(t, 'rich');
    const no = onTerminal(['image', 'prune', '-a'], { home, keys: 'n\n' });
    assert.match(no.out, /Are you sure you want to continue\? \[y\/N\]/);
    assert.equal(no.status, 1);
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout, 'rich:latest\n');
    const yes = onTerminal(['image', 'prune', '-a'], { home, keys: 'y\n' });
    assert.equal(yes.status, 0, yes.out);
    assert.match(yes.out, /Removed: rich:latest/);
    assert.equal(ok(cli(['image', 'ls', '-q'], { home })).stdout, '');
  });

  test('counts agree with their nouns: 1 layer, 2 layers, 0 temporary files', (t) => {
    const home = loaded(t, 'multiarch');
    const one = ok(cli(['image', 'prune', '-a', '-f'], { home })).stdout;
    assert.match(one, /^Removed 1 reference, 1 manifest, 1 config, 1 layer, 0 temporary files, 0 expired leases$/m);
    const two = ok(cli(['image', 'prune', '-a', '--dry-run'], { home: loaded(t, 'pair') })).stdout;
    assert.match(two, /^Would remove 2 references, 2 manifests, 2 configs, 2 layers, 0 temporary files, 0 expired leases$/m);
    const checked = ok(cli(['image', 'verify'], { home: loaded(t, 'pair') })).stdout;
    assert.match(checked, /^checked \d+ blobs \(/m);
    for (const out of [one, two, checked]) assert.doesNotMatch(out, /(^|[^\d.])1 [a-z]+s\b/m);
  });

  test('prune shows each image with what only it held (uniqueBytes): they add up to at most the total', async (t) => {
    // app and base share their bottom layer: each one's own share leaves it out.
    const home = loaded(t, 'pair');
    const api = await Image.pruneLocal(new LocalBackend({ home }), { dryRun: true });
    assert.equal(api.removed.length, 2);
    assert.ok(api.removed.every((x) => x.uniqueBytes < x.bytes), JSON.stringify(api.removed));
    for (const dryRun of [true, false]) {
      const out = ok(cli(['image', 'prune', '-a', ...(dryRun ? ['--dry-run'] : ['-f'])], { home })).stdout;
      const lines = [...out.matchAll(/^(?:Would remove|Removed): (\S+) \((\w{12}), (\S+) unique to it\)$/gm)];
      assert.deepEqual(lines.map((m) => m[1]).sort(), ['app:latest', 'base:latest'], out);
      for (const [, ref, , size] of lines) {
        const x = api.removed.find((r) => r.reference === ref);
        assert.equal(size, humanSize(x.uniqueBytes), `${ref}: ${out}`);
      }
      const total = parseSize(/^Total \w+ space: (\S+)$/m.exec(out)[1]);
      assert.ok(lines.reduce((a, m) => a + parseSize(m[3]), 0) <= total, out);
    }
    assert.deepEqual(blobFiles(home), []);
  });

  test('df shows totals, -v per image, --json the API object', async (t) => {
    const home = loaded(t, 'pair', 'rich');
    const u = await Image.diskUsageLocal(new LocalBackend({ home }));
    const plain = ok(cli(['image', 'df'], { home })).stdout;
    assert.match(plain, /^TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE\nImages\s+3\s+0\s+/);
    assert.doesNotMatch(plain, /UNIQUE/);
    const verbose = ok(cli(['image', 'df', '-v'], { home })).stdout;
    assert.match(verbose, /REFERENCE\s+DIGEST\s+SIZE\s+SHARED\s+UNIQUE\s+IN USE\s+LAST USED/);
    assert.match(verbose, /app:latest\s+\w{12}\s+\S+B\s+\S+B\s+\S+B\s+no\s+never/);
    const json = JSON.parse(ok(cli(['image', 'df', '--json'], { home })).stdout);
    assert.equal(json.blobsBytes, u.blobsBytes);
    assert.equal(json.reclaimableBytes, u.reclaimableBytes);
    assert.deepEqual(json.images.map((i) => [i.reference, i.uniqueBytes]), u.images.map((i) => [i.reference, i.uniqueBytes]));
  });
});

describe('cli: load and save', () => {
  test('without a terminal, load tells one line per layer: loaded, or skipped when the cache had it', (t) => {
    const home = tempHome(t);
    const layers = MANIFEST.rich.layers.map((d, i) => [d, humanSize(MANIFEST.rich.layerSizes[i])]);
    const expect = (stderr, line) => {
      assert.doesNotMatch(stderr, /\x1b\[/);
      const lines = stderr.trim().split('\n');
      assert.match(lines.pop(), /^committed \S+B in \d+\.\ds$/, stderr);
      assert.deepEqual(lines.sort(), layers.map(([d, size]) => line(`sha256:${d.slice(7, 19)}…`, size)).sort(), stderr);
    };
    for (let i = 0; i < 3; i++) {
      // Each time on a fresh home: every layer comes in.
      const fresh = tempHome(t);
      expect(ok(cli(['image', 'load', fixture('rich')], { home: fresh })).stderr, (d, size) => `loaded ${d} ${size}`);
    }
    ok(cli(['image', 'load', fixture('rich')], { home }));
    expect(ok(cli(['image', 'load', fixture('rich')], { home })).stderr, (d, size) => `skipped ${d} ${size} (already in the cache)`);
    // An archive: read whole, then every layer of it.
    const file = path.join(tempDir(t), 'rich.tar');
    ok(cli(['image', 'save', '-q', '-o', file, 'rich'], { home }));
    const fromArchive = ok(cli(['image', 'load', file], { home: tempHome(t) })).stderr;
    assert.match(fromArchive, /^read \S+B\n/);
    expect(fromArchive.replace(/^read .*\n/, ''), (d, size) => `loaded ${d} ${size}`);
    // An uncompressed layer has no verify phase: told at the commit; when cached, it sends no event at all.
    const plain = plainLayerLayout(t);
    const name = `sha256:${plain.layer.digest.slice(7, 19)}…`;
    const once = ok(cli(['image', 'load', plain.dir], { home })).stderr;
    assert.match(once, new RegExp(`^loaded ${name} ${humanSize(plain.layer.size)}\n(committed .*\n)$`));
    const twice = ok(cli(['image', 'load', plain.dir], { home })).stderr;
    assert.match(twice, new RegExp(`^skipped ${name} ${humanSize(plain.layer.size)} \\(already in the cache\\)\n(committed .*\n)$`));
    // Nothing with -q or --json.
    for (const flag of ['-q', '--json']) assert.equal(ok(cli(['image', 'load', flag, fixture('rich')], { home: tempHome(t) })).stderr, '', flag);
  });

  test('save -q tells nothing: stdout carries the archive alone, stderr stays empty', (t) => {
    const home = loaded(t, 'pair');
    const dir = tempDir(t);
    const file = path.join(dir, 'pair.tar');
    const told = ok(cli(['image', 'save', '-o', file, 'app', 'base'], { home }));
    assert.match(told.stdout, new RegExp(`^Saved 2 images to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\S+B\\)\n$`));
    const archive = fs.readFileSync(file);
    const quiet = cli(['image', 'save', '-q', 'app', 'base'], { home, raw: true });
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
    assert.ok(Buffer.compare(quiet.stdout, archive) === 0, 'stdout is not the archive alone');
    const chatty = cli(['image', 'save', 'app', 'base'], { home, raw: true });
    assert.ok(Buffer.compare(chatty.stdout, archive) === 0, 'stdout is not the archive alone');
    assert.match(chatty.stderr, /^Saved 2 images to stdout \(\S+B\)\n$/);
    const again = path.join(dir, 'again.tar');
    const toFile = ok(cli(['image', 'save', '-q', '-o', again, 'app', 'base'], { home }));
    assert.equal(toFile.stdout, '');
    assert.equal(toFile.stderr, '');
    assert.ok(Buffer.compare(fs.readFileSync(again), archive) === 0);
  });

  test('save -o FILE and to stdout give the same archive; load reads it from stdin', (t) => {
    const home = loaded(t, 'pair');
    const dir = tempDir(t);
    const file = path.join(dir, 'pair.tar');
    ok(cli(['image', 'save', '-o', file, 'app', 'base'], { home }));
    const piped = cli(['image', 'save', 'app', 'base'], { home, raw: true });
    assert.equal(piped.status, 0, piped.stderr);
    assert.ok(Buffer.compare(piped.stdout, fs.readFileSync(file)) === 0, 'stdout differs from -o FILE');
    const docker = path.join(dir, 'pair-docker.tar');
    ok(cli(['image', 'save', '--format', 'docker', '-o', docker, 'app'], { home }));
    assert.ok(fs.statSync(docker).size > 0);

    const other = tempHome(t);
    const r = ok(cli(['image', 'load', '--json', '-'], { home: other, input: fs.readFileSync(file) }));
    const handles = JSON.parse(r.stdout);
    assert.deepEqual(handles.map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    assert.equal(r.stderr, '', 'no progress with --json');
    const renamed = ok(cli(['image', 'load', '--reference', 'ghcr.io/me/app:1', docker], { home: other }));
    assert.match(renamed.stdout, /^ghcr\.io\/me\/app:1 sha256:/);
    // Without a terminal, progress is plain lines on stderr.
    const third = tempHome(t);
    const plain = ok(cli(['image', 'load', file], { home: third }));
    assert.match(plain.stderr, /^read \S+B$/m);
    assert.match(plain.stderr, /^loaded sha256:[0-9a-f]{12}… \S+B$/m);
    assert.doesNotMatch(plain.stderr, /\x1b\[/);
    const bad = cli(['image', 'load', '-'], { home: third, input: Buffer.from('not an archive') });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error: InvalidArchive: /m);
  });
});

describe('cli: pull without a terminal', () => {
  let registry;
  let addr;
  before(async () => {
    registry = await startRegistry();
    addr = registry.addr;
    pushFixture(addr, 'rich:rich', 'team/rich:1');
  });
  after(() => registry?.stop());

  test('pull tells one line per layer: pulled, then skipped when the cache has it', (t) => {
    const home = tempHome(t);
    const ref = `${addr}/team/rich:1`;
    const layers = MANIFEST.rich.layers.map((d, i) => [`sha256:${d.slice(7, 19)}…`, humanSize(MANIFEST.rich.layerSizes[i])]);
    const first = ok(cli(['image', 'pull', ref], { home }));
    assert.equal(first.stdout, `${ref} ${MANIFEST.rich.manifestDigest} ${humanSize(MANIFEST.rich.totalSize)}\n`);
    const lines = first.stderr.trim().split('\n');
    assert.match(lines.pop(), /^committed \S+B in \d+\.\ds$/, first.stderr);
    assert.deepEqual(lines.filter((l) => /^pulled sha256:\w{12}… /.test(l)).sort(), layers.map(([d, size]) => `pulled ${d} ${size}`).sort(), first.stderr);
    const skipped = layers.map(([d, size]) => `skipped ${d} ${size} (already in the cache)`).sort();
    const again = ok(cli(['image', 'pull', ref], { home })).stderr.trim().split('\n');
    assert.match(again.pop(), /^committed 0B in /);
    assert.deepEqual(again.sort(), skipped);
    // Answered from the cache without asking the registry: the same lines, no commit.
    assert.deepEqual(ok(cli(['image', 'pull', '--policy', 'missing', ref], { home })).stderr.trim().split('\n').sort(), skipped);
    assert.equal(ok(cli(['image', 'pull', '-q', ref], { home: tempHome(t) })).stderr, '');
  });
});
