// The package loads by name from ESM (`import`) and CommonJS (`require`), as
// an installed dependency would: a temporary project whose
// node_modules/microsandbox is a symlink to this repository.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, tempDir } from './helpers.mjs';

const EXPECTED = {
  Image: 'function',
  ImageHandle: 'function',
  ImageLease: 'function',
  LocalBackend: 'function',
  ErrorCode: 'object',
};

/** A temporary project that depends on microsandbox; returns its directory. */
function project(t) {
  const dir = tempDir(t, 'msb-project-');
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'microsandbox'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  return dir;
}

function run(dir, file, source) {
  fs.writeFileSync(path.join(dir, file), source);
  const home = path.join(dir, 'home');
  const r = spawnSync(process.execPath, [file], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, MSB_HOME: home },
  });
  assert.equal(r.status, 0, `node ${file} failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

const REPORT = `
  const types = Object.fromEntries(names.map((n) => [n, typeof m[n]]));
  const codes = m.ErrorCode && { ...m.ErrorCode };
  Promise.all([m.Image.list(), m.Image.listLocal(new m.LocalBackend({ home: process.env.MSB_HOME }))]).then(
    ([ambient, local]) => console.log(JSON.stringify({ types, codes, ambient, local, home: new m.LocalBackend().home })),
    (e) => { console.error(e.code, e.message); process.exit(2); });
`;

function check(out, dir) {
  assert.deepEqual(out.types, EXPECTED);
  assert.equal(out.codes.InvalidArgument, 'InvalidArgument');
  assert.equal(out.codes.ImageNotFound, 'ImageNotFound');
  assert.equal(Object.keys(out.codes).length, 13);
  assert.deepEqual(out.ambient, []);
  assert.deepEqual(out.local, []);
  assert.equal(out.home, path.join(dir, 'home'));
}

test('ESM: import { Image, ... } from "microsandbox"', (t) => {
  const dir = project(t);
  const out = run(
    dir,
    'consumer.mjs',
    `import { Image, ImageHandle, ImageLease, LocalBackend, ErrorCode } from 'microsandbox';
     import * as ns from 'microsandbox';
     import pkg from 'microsandbox';
     if (pkg.Image !== Image || ns.Image !== Image) { console.error('default/namespace mismatch'); process.exit(3); }
     const m = { Image, ImageHandle, ImageLease, LocalBackend, ErrorCode };
     const names = ${JSON.stringify(Object.keys(EXPECTED))};
     ${REPORT}`,
  );
  check(out, dir);
});

test('CommonJS: require("microsandbox")', (t) => {
  const dir = project(t);
  const out = run(
    dir,
    'consumer.cjs',
    `const m = require('microsandbox');
     const { Image } = require('microsandbox');
     if (Image !== m.Image) { console.error('destructured mismatch'); process.exit(3); }
     const names = ${JSON.stringify(Object.keys(EXPECTED))};
     ${REPORT}`,
  );
  check(out, dir);
});

test('typings: __test__/typed.ts type-checks against index.d.ts (tsc -p __test__/tsconfig.json)', () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, '__test__', 'tsconfig.json')], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}\n${r.stderr}`);
});

test('the README demo (npm run demo) runs to the end on real images', () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'examples', 'demo.mjs')], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
  for (const step of ['# load', '# list', '# inspect rich', '# save rich and app', '# disk usage', 'dry run: ', '# verify']) {
    assert.ok(r.stdout.includes(step), `the demo never printed ${step}`);
  }
  assert.match(r.stdout, /remove app -> ImageInUse: /);
  assert.match(r.stdout, /second cache: \d+ blobs checked, clean/);
});
