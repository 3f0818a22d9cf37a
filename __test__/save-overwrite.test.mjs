// Image.save and `microsandbox image save` replace an existing file only
// when asked (`overwrite: true`, `--overwrite`), and a link never.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Image, LocalBackend, fixture, rejectsWith, runCli, tempDir, tempHome } from './helpers.mjs';

test('save refuses an existing file unless overwrite is set, and a link always', async (t) => {
  const home = tempHome(t);
  const backend = new LocalBackend({ home });
  await Image.loadLocal(backend, fixture('rich'));
  const dir = tempDir(t);
  const keys = path.join(dir, 'authorized_keys');
  fs.writeFileSync(keys, 'ssh-ed25519 AAAA owner\n');
  await rejectsWith(() => Image.saveLocal(backend, 'rich', keys), 'InvalidArgument', /exists.*overwrite/);
  await rejectsWith(() => Image.saveLocal(backend, 'rich', { outputPath: keys }), 'InvalidArgument', /exists/);
  assert.equal(fs.readFileSync(keys, 'utf8'), 'ssh-ed25519 AAAA owner\n');
  await rejectsWith(() => Image.saveLocal(backend, 'rich', keys, { overwrite: 'yes' }), 'InvalidArgument', /overwrite/);

  const victim = path.join(tempDir(t), 'victim');
  fs.writeFileSync(victim, 'keep me\n');
  const link = path.join(dir, 'link');
  fs.symlinkSync(victim, link);
  for (const overwrite of [false, true]) {
    await rejectsWith(() => Image.saveLocal(backend, 'rich', link, { overwrite }), 'InvalidArgument');
  }
  assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n');
  assert.ok(fs.lstatSync(link).isSymbolicLink());

  await Image.saveLocal(backend, 'rich', keys, { overwrite: true });
  const fresh = path.join(dir, 'fresh.tar');
  await Image.saveLocal(backend, 'rich', { outputPath: fresh });
  assert.deepEqual(fs.readFileSync(keys), fs.readFileSync(fresh), 'replaced by the same archive a fresh save writes');
  await Image.saveLocal(backend, 'rich', { outputPath: fresh, overwrite: true });
});

test('image save -o FILE refuses an existing FILE without --overwrite', (t) => {
  const home = tempHome(t);
  const load = runCli(['image', 'load', '-q', fixture('rich')], { home });
  assert.equal(load.status, 0, load.stderr);
  const file = path.join(tempDir(t), 'out.tar');
  fs.writeFileSync(file, 'precious');
  const refused = runCli(['image', 'save', '-q', '-o', file, 'rich'], { home });
  assert.equal(refused.status, 1, refused.stderr);
  assert.match(refused.stderr, /InvalidArgument: .*exists/);
  assert.equal(fs.readFileSync(file, 'utf8'), 'precious');
  const replaced = runCli(['image', 'save', '-q', '--overwrite', '-o', file, 'rich'], { home });
  assert.equal(replaced.status, 0, replaced.stderr);
  assert.notEqual(fs.readFileSync(file, 'utf8'), 'precious');
  const help = runCli(['image', 'save', '--help'], { home });
  assert.match(help.stdout + help.stderr, /--overwrite/);
});
