'use strict';
// The `microsandbox image ...` commands: each parses its own arguments,
// calls the addon's `*Local` methods on the home's backend, and prints a
// table for people or JSON (`--json`) for scripts. A command returns its
// exit code; errors of the cache reach main() as thrown coded errors.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { pipeline } = require('node:stream/promises');
const { Image, ErrorCode } = require('../../index.js');
const { humanSize, ago, agoOrDash, count, table, shortDigest } = require('./format');
const { reporter } = require('./progress');

/** A usage error: main() prints it with the command's help and exits 2. */
class UsageError extends Error {}

const COMMON = {
  home: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

/** JSON for scripts: Dates as ISO strings, one document, a newline. */
function printJson(value) {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function handleJson(h) {
  return typeof h.toJSON === 'function' ? h.toJSON() : h;
}

function needArgs(positionals, min, what) {
  if (positionals.length < min) throw new UsageError(`missing ${what}`);
}

function noArgs(positionals) {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
}

/** A size, or `-` when it is not known. */
const sizeOrDash = (n) => (n == null ? '-' : humanSize(n));

/** `3 manifests, 1 config, 12 layers` of a list of orphans. */
function kinds(orphans) {
  return ['manifest', 'config', 'layer'].map((k) => count(orphans.filter((o) => o.kind === k).length, k)).join(', ');
}

async function orphans({ backend, values }) {
  const list = await Image.orphansLocal(backend);
  if (values.json) {
    printJson(list);
    return 0;
  }
  const rows = list.map((o) => [values.digests ? o.digest : shortDigest(o.digest), o.kind, humanSize(o.sizeBytes), agoOrDash(o.modifiedAt)]);
  if (rows.length > 0) process.stdout.write(`${table(['DIGEST', 'KIND', 'SIZE', 'MODIFIED'], rows)}\n`);
  const total = list.reduce((a, o) => a + o.sizeBytes, 0);
  process.stdout.write(`${count(list.length, 'orphaned blob')} (${kinds(list)}), ${humanSize(total)}: what image gc would remove\n`);
  return 0;
}

async function ls({ backend, values, positionals }) {
  noArgs(positionals);
  if (values.orphans) return orphans({ backend, values });
  const images = await Image.listLocal(backend);
  if (values.json) {
    printJson(images.map(handleJson));
  } else if (values.quiet) {
    for (const h of images) process.stdout.write(`${h.reference}\n`);
  } else {
    // DISK (whether the VM disk is made) once the cache has any.
    const disks = images.some((h) => h.diskReady);
    const rows = images.map((h) => [
      h.reference,
      values.digests ? h.manifestDigest : shortDigest(h.manifestDigest),
      h.os && h.architecture ? `${h.os}/${h.architecture}` : '-',
      sizeOrDash(h.sizeBytes),
      agoOrDash(h.imageCreatedAt),
      agoOrDash(h.createdAt),
      ago(h.lastUsedAt),
      ...(disks ? [h.diskReady ? 'ready' : '-'] : []),
    ]);
    // CREATED as docker images: when the image was built; ADDED: when it
    // entered this cache (unknown for an entry another tool wrote).
    const header = ['REFERENCE', 'DIGEST', 'PLATFORM', 'SIZE', 'CREATED', 'ADDED', 'LAST USED', ...(disks ? ['DISK'] : [])];
    process.stdout.write(`${table(header, rows)}\n`);
  }
  return 0;
}

async function inspect({ backend, positionals }) {
  needArgs(positionals, 1, 'REF');
  const out = [];
  let failed = false;
  for (const ref of positionals) {
    try {
      out.push(await Image.inspectLocal(backend, ref));
    } catch (e) {
      failed = true;
      reportError(e);
    }
  }
  printJson(out);
  return failed ? 1 : 0;
}

async function rm({ backend, values, positionals }) {
  needArgs(positionals, 1, 'REF');
  let failed = false;
  const removed = [];
  for (const ref of positionals) {
    try {
      await Image.removeLocal(backend, ref, { force: Boolean(values.force) });
      removed.push(ref);
      if (!values.json) process.stdout.write(`Untagged: ${ref}\n`);
    } catch (e) {
      failed = true;
      reportError(e);
    }
  }
  if (values.json) printJson({ removed });
  return failed ? 1 : 0;
}

async function confirm(question) {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  const answer = await new Promise((resolve) => rl.question(question, resolve));
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

async function prune({ backend, values, positionals }) {
  noArgs(positionals);
  const options = { dryRun: Boolean(values['dry-run']) };
  const policy = values['unused-for'] !== undefined || values['max-size'] !== undefined;
  if (values['unused-for'] !== undefined) options.unusedFor = values['unused-for'];
  if (values['max-size'] !== undefined) options.maxBytes = values['max-size'];
  // docker's convention: by default only what nothing uses; -a (or a
  // policy) takes references too. --vm-only takes only VM disks.
  if (values['vm-only']) options.vmOnly = true;
  else if (!values.all && !policy) options.dangling = true;
  if (!options.dryRun && !values.force && process.stdin.isTTY && process.stderr.isTTY) {
    const what = options.vmOnly
      ? 'the VM disks the policy selects (images and blobs stay)'
      : options.dangling
      ? 'all content no image or lease needs'
      : values.all && !policy
        ? 'every image no lease pins, and all content nothing needs'
        : 'the images the policy selects, and all content nothing needs';
    if (!(await confirm(`WARNING! This will remove ${what}.\nAre you sure you want to continue? [y/N] `))) {
      process.stderr.write('aborted\n');
      return 1;
    }
  }
  const r = await Image.pruneLocal(backend, options);
  if (values.json) {
    printJson(r);
    return 0;
  }
  const verb = r.dryRun ? 'Would remove' : 'Removed';
  // Each image with what its removal alone frees (uniqueBytes): these add
  // up to at most the total, where shared blobs are counted once.
  for (const x of r.removed) {
    process.stdout.write(`${verb}: ${x.reference} (${shortDigest(x.manifestDigest)}, ${humanSize(x.uniqueBytes)} unique to it)\n`);
  }
  const counts = [
    count(r.imageRefsRemoved, 'reference'),
    count(r.manifestsRemoved, 'manifest'),
    count(r.configsRemoved, 'config'),
    count(r.layersRemoved, 'layer'),
    count(r.tmpFilesRemoved, 'temporary file'),
    count(r.expiredLeasesRemoved, 'expired lease'),
  ];
  if (r.fsmetaRemoved || r.vmdkRemoved) counts.push(count(r.vmdkRemoved, 'VM disk'));
  process.stdout.write(`${verb} ${counts.join(', ')}\n`);
  if (r.overBudgetBytes > 0) process.stdout.write(`Leases keep the cache ${humanSize(r.overBudgetBytes)} over the budget\n`);
  process.stdout.write(`Total ${r.dryRun ? 'reclaimable' : 'reclaimed'} space: ${sizeOrDash(r.bytesReclaimed)}\n`);
  return 0;
}

async function gc({ backend, values, positionals }) {
  noArgs(positionals);
  const dryRun = Boolean(values['dry-run']);
  const before = await Image.orphansLocal(backend);
  const r = await Image.pruneLocal(backend, { dangling: true, dryRun });
  if (values.json) {
    printJson({ removed: before, report: r });
    return 0;
  }
  const verb = dryRun ? 'Would remove' : 'Removed';
  for (const o of before) process.stdout.write(`${verb} ${o.kind} ${values.digests ? o.digest : shortDigest(o.digest)} ${humanSize(o.sizeBytes)}\n`);
  const counts = [
    count(r.manifestsRemoved, 'manifest'),
    count(r.configsRemoved, 'config'),
    count(r.layersRemoved, 'layer'),
    count(r.tmpFilesRemoved, 'temporary file'),
    count(r.expiredLeasesRemoved, 'expired lease'),
  ];
  process.stdout.write(`${verb} ${counts.join(', ')}: ${sizeOrDash(r.bytesReclaimed)}\n`);
  return 0;
}

async function purge({ backend, values, positionals }) {
  noArgs(positionals);
  if (!values.yes && process.stdin.isTTY && process.stderr.isTTY) {
    const leases = values.force ? ' and end every lease' : '';
    if (!(await confirm(`WARNING! This will remove every image, blob and temporary file of the cache${leases}.\nAre you sure you want to continue? [y/N] `))) {
      process.stderr.write('aborted\n');
      return 1;
    }
  }
  const r = await Image.purgeLocal(backend, { force: Boolean(values.force) });
  if (values.json) {
    printJson(r);
    return 0;
  }
  const counts = [
    count(r.imageRefsRemoved, 'reference'),
    count(r.manifestsRemoved, 'manifest'),
    count(r.configsRemoved, 'config'),
    count(r.layersRemoved, 'layer'),
    count(r.tmpFilesRemoved, 'temporary file'),
    count(r.expiredLeasesRemoved, 'lease'),
  ];
  process.stdout.write(`Purged ${counts.join(', ')}: ${sizeOrDash(r.bytesReclaimed)}\n`);
  return 0;
}

async function df({ backend, values, positionals }) {
  noArgs(positionals);
  const u = await Image.diskUsageLocal(backend);
  if (values.json) {
    printJson(u);
    return 0;
  }
  const active = u.images.filter((i) => i.inUse).length;
  process.stdout.write(
    `${table(
      ['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE'],
      [
        ['Images', u.images.length, active, humanSize(u.blobsBytes), humanSize(u.reclaimableBytes)],
        ['VM disks', '-', '-', humanSize(u.vmBytes), '-'],
        ['Temporary', '-', '-', humanSize(u.tmpBytes), '-'],
      ],
    )}\nTotal on disk: ${humanSize(u.totalBytes)}\n`,
  );
  if (values.verbose) {
    const rows = u.images.map((i) => [
      i.reference,
      shortDigest(i.manifestDigest),
      humanSize(i.sizeBytes),
      humanSize(i.sharedBytes),
      humanSize(i.uniqueBytes),
      i.inUse ? 'yes' : 'no',
      ago(i.lastUsedAt),
    ]);
    process.stdout.write(`\n${table(['REFERENCE', 'DIGEST', 'SIZE', 'SHARED', 'UNIQUE', 'IN USE', 'LAST USED'], rows)}\n`);
  }
  return 0;
}

/**
 * Progress for pull and load: bars on a terminal, a line per layer
 * otherwise, none with --json or --quiet. `done(handles)` has the last
 * word (it may wait for the last events); `close()` silences it on failure.
 */
function progressFor(backend, values, verb) {
  const silent = { options: {}, async done() {}, close() {} };
  if (values.json || values.quiet) return silent;
  const tty = Boolean(process.stderr.isTTY);
  const r = reporter(process.stderr, { tty, verb });
  return {
    options: { onProgress: r.onProgress },
    async done(handles, expected = true) {
      await r.done({ layers: tty ? [] : await layersOf(backend, handles), expected });
    },
    close: r.close,
  };
}

/** The distinct layer blobs of `handles` (`{ digest, size }`), as the cache has them now. */
async function layersOf(backend, handles) {
  const images = new Map(handles.map((h) => [h.manifestDigest, h.reference]));
  const layers = new Map();
  for (const reference of images.values()) {
    let detail;
    try {
      detail = await Image.inspectLocal(backend, reference);
    } catch {
      continue; // gone already (another process removed it): nothing to tell
    }
    for (const l of detail.layers) layers.set(l.blobDigest, { digest: l.blobDigest, size: l.compressedSizeBytes });
  }
  return [...layers.values()];
}

function printHandles(values, handles) {
  if (values.json) {
    printJson(handles.map(handleJson));
    return;
  }
  for (const h of handles) process.stdout.write(`${h.reference} ${h.manifestDigest} ${sizeOrDash(h.sizeBytes)}\n`);
}

/**
 * `image push REF [DEST]`: a line per blob on stderr as it reaches the
 * registry (uploaded, mounted, exists), none with -q or --json; then the
 * destination and its digest on stdout.
 */
async function push({ backend, values, positionals }) {
  needArgs(positionals, 1, 'REF');
  if (positionals.length > 2) throw new UsageError(`unexpected argument ${positionals[2]}`);
  const options = {};
  if (positionals[1]) options.to = positionals[1];
  if (values.insecure) options.insecure = true;
  if (values['chunk-size'] !== undefined) {
    const n = Number(values['chunk-size']);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--chunk-size must be a number of bytes, got ${values['chunk-size']}`);
    options.chunkBytes = n;
  }
  if (!values.json && !values.quiet) {
    options.onProgress = (e) => {
      if (e.kind !== 'blobComplete') return;
      const what = e.layerIndex === null ? 'config' : `layer ${e.layerIndex}`;
      process.stderr.write(`${e.digest.slice(7, 19)}  ${what.padEnd(9)} ${e.how.padEnd(8)} ${humanSize(e.totalBytes)}\n`);
    };
  }
  const report = await Image.pushLocal(backend, positionals[0], options);
  if (values.json) printJson(report);
  else process.stdout.write(`${report.reference} ${report.manifestDigest}\n`);
  return 0;
}

async function pull({ backend, values, positionals }) {
  needArgs(positionals, 1, 'REF');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${positionals[1]}`);
  const p = progressFor(backend, values, 'pulled');
  const options = { ...p.options, policy: values.policy ?? 'always' };
  if (values.platform) options.platform = values.platform;
  if (values.insecure) options.insecure = true;
  try {
    const h = await Image.pullLocal(backend, positionals[0], options);
    // Only `always` is sure to transfer (and commit); the others may answer from the cache.
    await p.done([h], options.policy === 'always');
    if (values.materialize) {
      const disk = await Image.materializeLocal(backend, h.reference);
      if (values.json) {
        printJson({ ...handleJson(h), disk });
        return 0;
      }
      warnRemade(disk);
      if (!values.quiet) process.stderr.write(`disk ${disk.vmdkPath}\n`);
    }
    printHandles(values, [h]);
  } finally {
    p.close();
  }
  return 0;
}

/**
 * Makes an image's VM disk. Bars on a terminal, else a line per layer image
 * made; prints the VMDK's path (with --json the whole disk).
 */
async function materialize({ backend, values, positionals }) {
  needArgs(positionals, 1, 'REF');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${positionals[1]}`);
  const quiet = values.json || values.quiet;
  const tty = Boolean(process.stderr.isTTY);
  const r = quiet || !tty ? null : reporter(process.stderr, { tty, verb: 'made' });
  const options = {};
  if (r) options.onProgress = r.onProgress;
  if (!quiet && !tty) {
    options.onPullProgress = (e) => {
      if (e.kind === 'layerMaterializeComplete') {
        process.stderr.write(`layer ${e.layerIndex} ${e.diffId.slice(0, 19)}… ${humanSize(e.erofsSizeBytes)}\n`);
      }
    };
  }
  let disk;
  try {
    disk = await Image.materializeLocal(backend, positionals[0], options);
  } finally {
    if (r) r.close();
  }
  if (values.json) printJson(disk);
  else {
    warnRemade(disk);
    process.stdout.write(`${disk.vmdkPath}\n`);
  }
  return 0;
}

/** Says on stderr what a materialize found damaged and made again (always: it is news even with -q). */
function warnRemade(disk) {
  for (const what of disk.remade) process.stderr.write(`warning: remade ${what}\n`);
}

/** A temporary directory under the OS's, removed by `cleanup`. */
function scratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-cli-'));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

async function load({ backend, values, positionals }) {
  needArgs(positionals, 1, 'FILE (or - for stdin)');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${positionals[1]}`);
  const p = progressFor(backend, values, 'loaded');
  const options = { ...p.options };
  if (values.platform) options.platform = values.platform;
  if (values.reference) options.reference = values.reference;
  let file = positionals[0];
  let tmp = null;
  if (file === '-') {
    tmp = scratch();
    file = path.join(tmp.dir, 'stdin.tar');
    await pipeline(process.stdin, fs.createWriteStream(file));
  }
  try {
    const handles = await Image.loadLocal(backend, file, options);
    await p.done(handles);
    printHandles(values, handles);
  } finally {
    p.close();
    tmp?.cleanup();
  }
  return 0;
}

/** save's word on what it wrote, where the archive is not: none with -q or --json. */
function saved(values, stream, n, where, file) {
  if (values.quiet || values.json) return;
  stream.write(`Saved ${count(n, 'image')} to ${where} (${humanSize(fs.statSync(file).size)})\n`);
}

async function save({ backend, values, positionals }) {
  needArgs(positionals, 1, 'REF');
  let out = values.output;
  if (out === undefined) {
    if (process.stdout.isTTY) throw new UsageError('refusing to write an archive to a terminal: give -o FILE (or -o - to force)');
    out = '-';
  }
  const options = { format: values.format ?? 'oci', overwrite: values.overwrite ?? false };
  if (out !== '-') {
    await Image.saveLocal(backend, positionals, out, options);
    if (values.json) printJson({ path: path.resolve(out), references: positionals });
    saved(values, process.stdout, positionals.length, out, out);
    return 0;
  }
  // The archive goes to stdout: stdout carries it alone, the rest goes to stderr.
  const tmp = scratch();
  try {
    const file = path.join(tmp.dir, 'out.tar');
    await Image.saveLocal(backend, positionals, file, options);
    await pipeline(fs.createReadStream(file), process.stdout);
    saved(values, process.stderr, positionals.length, 'stdout', file);
  } finally {
    tmp.cleanup();
  }
  return 0;
}

async function leases({ backend, values, positionals }) {
  if (positionals[0] === 'rm') {
    needArgs(positionals, 2, 'ID');
    let failed = false;
    for (const id of positionals.slice(1)) {
      const gone = await Image.releaseLocal(backend, id);
      if (!gone) {
        failed = true;
        process.stderr.write(`error: ImageNotFound: no lease ${id}\n`);
      } else if (!values.json) {
        process.stdout.write(`Released: ${id}\n`);
      }
    }
    if (values.json) printJson({ released: positionals.slice(1) });
    return failed ? 1 : 0;
  }
  if (positionals[0] !== undefined && positionals[0] !== 'ls') throw new UsageError(`unknown leases command ${positionals[0]}`);
  const all = await Image.leasesLocal(backend);
  if (values.json) {
    printJson(all.map(handleJson));
    return 0;
  }
  const rows = all.map((l) => [l.id, l.kind, l.reference ?? '-', shortDigest(l.manifestDigest ?? '-'), ago(l.createdAt), l.expiresAt ? l.expiresAt.toISOString() : 'never']);
  process.stdout.write(`${table(['ID', 'KIND', 'REFERENCE', 'DIGEST', 'CREATED', 'EXPIRES'], rows)}\n`);
  return 0;
}

async function verify({ backend, values, positionals }) {
  noArgs(positionals);
  const r = await Image.verifyLocal(backend, { repair: Boolean(values.repair) });
  if (values.json) {
    printJson(r);
    return r.clean ? 0 : 1;
  }
  const sections = [
    ['corrupt blob', r.corruptBlobs],
    ['missing blob', r.missingBlobs],
    ['dangling reference', r.danglingReferences],
    ['stray temporary file', r.strayTmpFiles],
    ['bad lease file', r.badLeases],
    ['bad index entry', r.badIndexEntries ?? []],
    ['quarantined', r.quarantined],
    ['removed reference', r.removedReferences],
  ];
  for (const [what, items] of sections) for (const item of items) process.stdout.write(`${what}: ${item}\n`);
  process.stdout.write(`checked ${count(r.blobsChecked, 'blob')} (${humanSize(r.bytesChecked)}): ${r.clean ? 'clean' : 'PROBLEMS FOUND'}\n`);
  return r.clean ? 0 : 1;
}

const CODES = new Set(Object.values(ErrorCode));

/**
 * Prints an error of the cache as `error: Code: message` (its code is one
 * of the API's ErrorCode names), any other as `error: message`.
 */
function reportError(e) {
  const message = e && e.message ? e.message : String(e);
  const code = e && CODES.has(e.code) ? `${e.code}: ` : '';
  process.stderr.write(`error: ${code}${message}\n`);
}

// Each command: `summary`, one line (a whole sentence) for the top help;
// `about`, the details its own help adds.
const COMMANDS = {
  ls: {
    run: ls,
    usage: 'image ls [-q] [--digests] [--orphans] [--json]',
    summary: 'List images, newest first.',
    about:
      'Columns: CREATED is when the image was built (its config says; - if not), ADDED when it\n' +
      'entered this cache (- for an entry another tool wrote), LAST USED when a lease last took it,\n' +
      'DISK (once the cache holds any VM disk) ready when image materialize made its disk.\n' +
      '-q prints references only; --digests full digests. --orphans lists instead the blobs no image\n' +
      'or lease needs (DIGEST KIND SIZE MODIFIED) and a summary: what image gc would remove.',
    options: { quiet: { type: 'boolean', short: 'q' }, digests: { type: 'boolean' }, orphans: { type: 'boolean' } },
  },
  inspect: {
    run: inspect,
    usage: 'image inspect REF...',
    summary: 'Print details of images as a JSON array, like docker image inspect.',
    about: 'A reference not in the cache is an error on stderr (exit 1); the others are still printed.',
    options: {},
  },
  rm: {
    run: rm,
    usage: 'image rm [-f] REF...',
    summary: 'Remove references; their content goes at the next prune.',
    about: '-f removes one a lease pins.',
    options: { force: { type: 'boolean', short: 'f' } },
  },
  prune: {
    run: prune,
    usage: 'image prune [-a] [--vm-only] [--unused-for AGE] [--max-size SIZE] [--dry-run] [-f] [--json]',
    summary: 'Remove what nothing uses; with -a or a policy, images too.',
    about:
      'By default only content no image or lease needs; -a also every image no lease pins;\n' +
      '--unused-for 7d the images unused that long; --max-size 20GB the least recently used until the\n' +
      'cache fits. Each removed image is shown with the space only it held. --vm-only removes only VM\n' +
      'disks (of images no lease pins; with a policy, those it selects), keeping images and blobs.\n' +
      '--dry-run only reports.\n' +
      'Asks before deleting on a terminal unless -f.',
    options: {
      all: { type: 'boolean', short: 'a' },
      'unused-for': { type: 'string' },
      'max-size': { type: 'string' },
      'vm-only': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      force: { type: 'boolean', short: 'f' },
    },
  },
  gc: {
    run: gc,
    usage: 'image gc [--dry-run] [--digests] [--json]',
    summary: 'Remove the blobs no image or lease needs, and say which.',
    about:
      'A reachability collection: every blob no reference and no lease reaches goes (image ls\n' +
      '--orphans lists them), with the files of dead writers and expired leases. Images stay.',
    options: { 'dry-run': { type: 'boolean' }, digests: { type: 'boolean' } },
  },
  purge: {
    run: purge,
    usage: 'image purge [-y] [--force] [--json]',
    summary: 'Remove everything: every image, blob and temporary file.',
    about:
      'Leaves an empty, valid OCI layout. While a lease pins an image it fails (ImageInUse, naming\n' +
      'the holders); --force ends every lease first. Asks on a terminal unless -y.',
    options: { yes: { type: 'boolean', short: 'y' }, force: { type: 'boolean' } },
  },
  df: {
    run: df,
    usage: 'image df [-v] [--json]',
    summary: 'Show disk usage, each blob counted once.',
    about: '-v adds a line per image: its size, the part shared with others, and the part unique to it.',
    options: { verbose: { type: 'boolean', short: 'v' } },
  },
  pull: {
    run: pull,
    usage: 'image pull [--platform OS/ARCH] [--policy always|missing|never] [--insecure] [--materialize] [-q] REF',
    summary: 'Pull an image from its registry (Docker Hub by default).',
    about:
      'Progress on stderr: a bar per blob on a terminal, else a line per finished layer; none with -q\n' +
      'or --json. --policy missing answers from the cache when it can. --materialize also makes the\n' +
      "image's VM disk (as image materialize).",
    options: {
      materialize: { type: 'boolean' },
      platform: { type: 'string' },
      policy: { type: 'string' },
      insecure: { type: 'boolean' },
      quiet: { type: 'boolean', short: 'q' },
    },
  },
  push: {
    run: push,
    usage: 'image push [--insecure] [--chunk-size BYTES] [-q] [--json] REF [DEST]',
    summary: 'Push a cached image to a registry (to DEST, else to REF itself).',
    about:
      'Blobs the registry has are skipped, blobs of another repository of the same registry are\n' +
      'mounted, the rest uploaded six at a time in resumable chunks (--chunk-size, 64 MiB; 0 sends\n' +
      'each blob whole). Credentials as pull takes them (the docker config). A line per blob on\n' +
      'stderr; none with -q or --json. Nothing in the cache changes.',
    options: {
      insecure: { type: 'boolean' },
      'chunk-size': { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
    },
  },
  materialize: {
    run: materialize,
    usage: 'image materialize [-q] [--json] REF',
    summary: "Make an image's VM disk and print its VMDK's path.",
    about:
      'The disk: an EROFS image per layer (made once for every image that shares the layer), the\n' +
      'merged fsmeta and the VMDK joining them. A disk already made is checked and returned at\n' +
      'once. Progress on stderr: bars on a terminal, else a line per layer image made. --json\n' +
      'prints the whole disk (paths and sizes).',
    options: { quiet: { type: 'boolean', short: 'q' } },
  },
  load: {
    run: load,
    usage: 'image load [--reference NAME] [--platform OS/ARCH] [-q] FILE|-',
    summary: 'Load an OCI layout, OCI archive or docker-archive.',
    about: '- reads the archive from stdin. Progress on stderr as for pull; none with -q or --json.',
    options: { reference: { type: 'string' }, platform: { type: 'string' }, quiet: { type: 'boolean', short: 'q' } },
  },
  save: {
    run: save,
    usage: 'image save [--format oci|docker] [--overwrite] [-q] -o FILE|- REF...',
    summary: 'Write images to one archive.',
    about:
      '-o - (or no -o, stdout being a pipe) writes the archive to stdout; what was saved is then told\n' +
      'on stderr. --format docker for docker load. An existing FILE is replaced only with --overwrite.\n' +
      '-q tells nothing.',
    options: {
      output: { type: 'string', short: 'o' },
      format: { type: 'string' },
      overwrite: { type: 'boolean' },
      quiet: { type: 'boolean', short: 'q' },
    },
  },
  verify: {
    run: verify,
    usage: 'image verify [--repair] [--json]',
    summary: 'Re-hash every blob and check the cache.',
    about:
      'Exits 1 if anything is wrong. --repair moves corrupt blobs to cache/quarantine/, removes\n' +
      'references that can no longer be served, and deletes damaged VM artifacts (made again by the\n' +
      'next materialize).',
    options: { repair: { type: 'boolean' } },
  },
  leases: {
    run: leases,
    usage: 'image leases [ls] | image leases rm ID...',
    summary: 'List leases (what pins images), or release some.',
    about: '',
    options: {},
  },
};
COMMANDS.list = COMMANDS.ls;
COMMANDS.remove = COMMANDS.rm;

module.exports = { COMMANDS, COMMON, UsageError, reportError };
