// Image.verify and `microsandbox image verify`: a clean cache, then one
// corrupt layer found, reported with its reference, and repaired.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MANIFEST, ROOT, blobFiles, fixture, freshBackend, rejectsWith } from './helpers.mjs';
import { Image } from '../index.js';

const CLI = path.join(ROOT, 'bin', 'microsandbox.js');
const cli = (args, home) => spawnSync(process.execPath, [CLI, ...args, '--home', home], { encoding: 'utf8' });

describe('verify', () => {
  test('clean, then a corrupt layer found by the API and the CLI, then repaired', async (t) => {
    const { home, backend } = freshBackend(t);
    await Image.loadLocal(backend, fixture('pair'));
    await Image.loadLocal(backend, fixture('rich'));
    const clean = await Image.verifyLocal(backend);
    assert.equal(clean.clean, true);
    assert.equal(clean.blobsChecked, blobFiles(home).length);
    assert.deepEqual(clean.corruptBlobs, []);
    const ok = cli(['image', 'verify'], home);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /checked \d+ blobs \(.*\): clean\n$/);

    const layer = MANIFEST.rich.layers[0];
    const file = path.join(home, 'cache/oci/blobs/sha256', layer.slice(7));
    const bytes = fs.readFileSync(file);
    bytes[bytes.length >> 1] ^= 1;
    fs.writeFileSync(file, bytes);
    const bad = await Image.verifyLocal(backend);
    assert.equal(bad.clean, false);
    assert.deepEqual(bad.corruptBlobs, [layer]);
    assert.deepEqual(bad.danglingReferences, ['rich:latest']);
    const found = cli(['image', 'verify'], home);
    assert.equal(found.status, 1);
    assert.match(found.stdout, new RegExp(`^corrupt blob: ${layer}$`, 'm'));
    assert.match(found.stdout, /^dangling reference: rich:latest$/m);
    assert.match(found.stdout, /PROBLEMS FOUND/);

    const fixed = JSON.parse(cli(['image', 'verify', '--repair', '--json'], home).stdout);
    assert.deepEqual(fixed.quarantined, [layer]);
    assert.deepEqual(fixed.removedReferences, ['rich:latest']);
    assert.ok(fs.existsSync(path.join(home, 'cache/quarantine', layer.slice(7))));
    assert.deepEqual((await Image.listLocal(backend)).map((h) => h.reference).sort(), ['app:latest', 'base:latest']);
    assert.equal((await Image.verifyLocal(backend)).clean, true);
    await rejectsWith(() => Image.verifyLocal(backend, { repair: 'yes' }), 'InvalidArgument');
  });
});
