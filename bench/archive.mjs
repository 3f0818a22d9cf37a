// The archive benchmark: `node bench/archive.mjs` (after `npm run build`).
//
// Builds a ~1 GiB image of 4 uncompressed layers (each a real tar holding
// one 256 MiB file of seeded AES-CTR keystream: incompressible) as an OCI
// layout directory, makes a docker-archive and an OCI archive of it with
// skopeo, flushes everything to disk, then measures side by side, in one
// run, REPS repetitions each (a fresh cache home or output per repetition,
// deleted afterwards; which tool goes first rotates):
//
//   load docker-archive  Image.loadLocal (in a child node process, peak RSS
//                        from /usr/bin/time) vs `skopeo copy
//                        docker-archive:FILE oci:NEWDIR:big`
//   load OCI archive     Image.loadLocal vs `skopeo copy
//                        oci-archive:FILE:big oci:NEWDIR:big`
//   floor                `cat FILE > OUT && sha256sum OUT`, per archive
//   save                 Image.saveLocal(format 'oci') of the loaded image vs
//                        `skopeo copy oci:DIR:big oci-archive:OUT:big`
//
// Targets: skopeo / ours >= 2x, ours / floor <= 1.3x, peak RSS of a load
// < 100 MiB. Once per run (not with BENCH_QUICK=1) it also times what the
// floor is made of (cat alone, cat + fsync, sha256sum alone, openssl's
// sha256) and skopeo without layer compression, to explain the ratios.
//
// Every timed command is followed by a `sync` (timed apart, recorded, not in
// the ratios), so no command pays for the writeback of the one before.
//
// Prints a table and writes bench/archive-results.json (git-ignored).
// BENCH_QUICK=1: one repetition, no extras (a smoke test).
// `node bench/archive.mjs --child load|save|idle ...` is the child mode.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MiB, TIME, fmtS, fmtX, log, machine, mbps, median, msSince, now, runner, sorted, runBenchmark, stats, tarHeader, writeLayout } from './lib.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const SELF = fileURLToPath(import.meta.url)

if (process.argv[2] === '--child') {
  await child(process.argv.slice(3))
  process.exit(0)
}

// --- child mode ------------------------------------------------------------
// Runs one operation of ours in its own process, so its peak RSS is its own.
// Prints one JSON line: the call's duration, progress events, maxRSS.
async function child([op, home, file]) {
  const require = createRequire(import.meta.url)
  const { Image, LocalBackend } = require(path.join(ROOT, 'index.js'))
  const backend = new LocalBackend({ home })
  const out = { op }
  if (op === 'idle') {
    out.count = (await Image.listLocal(backend)).length
  } else if (op === 'load') {
    const events = []
    const t0 = performance.now()
    const handles = await Image.loadLocal(backend, file, {
      onProgress: (e) => events.push([performance.now() - t0, e.phase, e.bytes, e.totalBytes]),
    })
    out.ms = performance.now() - t0
    out.events = events
    out.handles = handles.map((h) => h.toJSON())
    const detail = await Image.inspectLocal(backend, handles[0].reference)
    out.layers = detail.layers.map((l) => ({ diffId: l.diffId, blobDigest: l.blobDigest, mediaType: l.mediaType }))
  } else if (op === 'save') {
    const t0 = performance.now()
    await Image.saveLocal(backend, ['big:latest'], file, { format: 'oci' })
    out.ms = performance.now() - t0
  } else {
    throw new Error(`unknown child op ${op}`)
  }
  out.maxRssKiB = process.resourceUsage().maxRSS
  console.log(JSON.stringify(out))
}

// --- parent ------------------------------------------------------------------
const QUICK = process.env.BENCH_QUICK === '1'
const REPS = QUICK ? 1 : 3
const LAYERS = 4
const LAYER_FILE_BYTES = 256 * MiB
const SKOPEO = process.env.SKOPEO ?? 'skopeo'

const results = {
  date: new Date().toISOString(),
  machine: machine(),
  quick: QUICK,
  reps: REPS,
}

const tStart = now()
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-archive-bench-'))
const skopeoTmp = path.join(work, 'skopeo-tmp') // skopeo's own temporaries
fs.mkdirSync(skopeoTmp)
const { run, syncAll, discard } = runner(work, { TMPDIR: skopeoTmp })
const cleanup = () => {
  const t = now()
  fs.rmSync(work, { recursive: true, force: true })
  log(`removed ${work} in ${fmtS(msSince(t))}`)
}
await runBenchmark(main, cleanup)

function runChild(op, home, file) {
  const r = run(process.execPath, [SELF, '--child', op, home, file ?? ''])
  const out = JSON.parse(r.stdout.trim().split('\n').pop())
  return { ...out, wallMs: r.ms, rssKiB: r.rssKiB ?? out.maxRssKiB }
}

// --- the input image ---------------------------------------------------------
/**
 * Writes a layer tar: `data/` and `data/<name>` holding `size` bytes of
 * AES-256-CTR keystream keyed by the seed (incompressible, reproducible).
 */
function writeLayer(file, seed, name, size) {
  const fd = fs.openSync(file, 'w')
  const hash = crypto.createHash('sha256')
  const put = (b) => {
    hash.update(b)
    for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off)
  }
  put(tarHeader('data/', 0, 0o755, '5'))
  put(tarHeader(`data/${name}`, size, 0o644, '0'))
  const key = crypto.createHash('sha256').update(`msb-archive-bench-layer-${seed}`).digest()
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(4 * MiB)
  for (let left = size; left > 0; ) {
    const n = Math.min(left, zeros.length)
    put(cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n)))
    left -= n
  }
  put(Buffer.alloc((512 - (size % 512)) % 512 + 1024)) // padding, end of archive
  fs.closeSync(fd)
  return { digest: 'sha256:' + hash.digest('hex'), size: fs.statSync(file).size }
}

/** The OCI layout directory: 4 layers, config, manifest, index (`big`). */
function buildLayout(dir) {
  const blobs = path.join(dir, 'blobs', 'sha256')
  fs.mkdirSync(blobs, { recursive: true })
  const layers = []
  for (let i = 0; i < LAYERS; i++) {
    const tmp = path.join(dir, 'layer.tmp')
    const l = writeLayer(tmp, i, `blob-${i}.bin`, LAYER_FILE_BYTES)
    fs.renameSync(tmp, path.join(blobs, l.digest.slice(7)))
    layers.push(l)
  }
  return writeLayout(dir, layers.map((l) => ({ ...l, diffId: l.digest })), 'application/vnd.oci.image.layer.v1.tar')
}

/** Reads one member of a tar file by walking its headers (seeking past data). */
function tarMember(file, wanted) {
  const fd = fs.openSync(file, 'r')
  try {
    const h = Buffer.alloc(512)
    for (let off = 0; ; ) {
      if (fs.readSync(fd, h, 0, 512, off) < 512 || h[0] === 0) return null
      const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '')
      const size = parseInt(h.toString('ascii', 124, 136).replace(/\0.*$/s, '').trim() || '0', 8)
      if (name.replace(/^\.\//, '') === wanted) {
        const b = Buffer.alloc(size)
        fs.readSync(fd, b, 0, size, off + 512)
        return b
      }
      off += 512 + Math.ceil(size / 512) * 512
    }
  } finally {
    fs.closeSync(fd)
  }
}

/** Layer media types of the single image of an OCI archive. */
function ociArchiveLayerTypes(file) {
  const index = JSON.parse(tarMember(file, 'index.json'))
  const m = JSON.parse(tarMember(file, `blobs/sha256/${index.manifests[0].digest.slice(7)}`))
  return m.layers.map((l) => l.mediaType)
}

/** The phases of one of our loads, from its progress events. */
function phases(load, archiveBytes) {
  const reads = load.events.filter((e) => e[1] === 'read')
  const commit = load.events.find((e) => e[1] === 'commit')
  const readEnd = reads.at(-1)[0]
  // Read events come every 8 MiB of the archive; a blob's fsync shows as
  // one long gap where the next entry starts.
  const gaps = []
  for (let i = 1; i < reads.length; i++) gaps.push(reads[i][0] - reads[i - 1][0])
  const typical = median(gaps)
  const stalls = gaps.filter((g) => g > 3 * typical)
  const stallMs = stalls.reduce((a, g) => a + g - typical, 0)
  return {
    firstEventMs: reads[0][0],
    readMs: readEnd,
    readMiBps: mbps(archiveBytes, readEnd),
    steadyMiBps: mbps(8 * MiB, typical),
    blobEndStalls: stalls.length,
    blobEndStallMs: stallMs,
    afterReadMs: commit[0] - readEnd, // diff_id check of gzip layers + commit
    callMs: load.ms,
  }
}

// --- main ----------------------------------------------------------------------
async function main() {
  log(`work dir ${work}`)
  results.machine.skopeo = run(SKOPEO, ['--version']).stdout.trim()
  if (!TIME) log('no /usr/bin/time: peak RSS from the child itself (process.resourceUsage)')

  // Inputs.
  let t = now()
  const layoutDir = path.join(work, 'layout')
  const image = buildLayout(layoutDir)
  const buildMs = msSince(t)
  const dockerTar = path.join(work, 'big-docker.tar')
  const ociTar = path.join(work, 'big-oci.tar')
  t = now()
  run(SKOPEO, ['copy', '-q', '--insecure-policy', `oci:${layoutDir}:big`, `docker-archive:${dockerTar}:big:latest`])
  const dockerMs = msSince(t)
  t = now()
  run(SKOPEO, ['copy', '-q', '--insecure-policy', `oci:${layoutDir}:big`, `oci-archive:${ociTar}:big`])
  const ociMs = msSince(t)
  const syncMs = syncAll()
  const inputs = {
    imageBytes: image.bytes,
    diffIds: image.layers.map((l) => l.digest),
    layoutManifest: image.manifest.digest,
    buildLayoutMs: buildMs,
    skopeoDockerArchiveMs: dockerMs,
    skopeoOciArchiveMs: ociMs,
    syncMs,
    dockerArchiveBytes: fs.statSync(dockerTar).size,
    ociArchiveBytes: fs.statSync(ociTar).size,
    ociArchiveLayerMediaTypes: ociArchiveLayerTypes(ociTar),
  }
  results.inputs = inputs
  log(
    `inputs: layout ${(image.bytes / MiB).toFixed(0)} MiB in ${fmtS(buildMs)}, docker-archive in ${fmtS(dockerMs)}, ` +
      `oci-archive in ${fmtS(ociMs)} (layers ${[...new Set(inputs.ociArchiveLayerMediaTypes)]}), sync ${fmtS(syncMs)}`,
  )

  const idle = runChild('idle', path.join(work, 'idle-home'))
  discard(path.join(work, 'idle-home'))
  results.childBaselineRssMiB = idle.rssKiB / 1024

  const m = {
    docker: { ours: [], skopeo: [], floor: [], oursRss: [], skopeoRss: [], phases: [], sync: { ours: [], skopeo: [], floor: [] } },
    oci: { ours: [], skopeo: [], floor: [], oursRss: [], skopeoRss: [], phases: [], sync: { ours: [], skopeo: [], floor: [] } },
    save: { ours: [], skopeo: [], oursRss: [], skopeoRss: [], oursBytes: null, skopeoBytes: null, oursDigests: [], sync: { ours: [], skopeo: [] } },
  }
  const floorHashes = { docker: new Set(), oci: new Set() }

  const rotate = (fns, i) => fns.map((_, k) => fns[(i + k) % fns.length])
  for (let i = 0; i < REPS; i++) {
    const home = path.join(work, `home-${i}`)
    // --- load, docker-archive and OCI archive; the floor on each.
    for (const [kind, file] of [['docker', dockerTar], ['oci', ociTar]]) {
      const r = m[kind]
      const h = kind === 'docker' ? home : path.join(work, `home-oci-${i}`)
      const ours = () => {
        const l = runChild('load', h, file)
        r.ours.push(l.wallMs)
        r.oursRss.push(l.rssKiB / 1024)
        r.sync.ours.push(syncAll())
        r.phases.push(phases(l, fs.statSync(file).size))
        assert.equal(l.handles.length, 1)
        assert.equal(l.handles[0].reference, 'big:latest')
        assert.equal(l.handles[0].layerCount, LAYERS)
        assert.deepEqual(l.layers.map((x) => x.diffId), inputs.diffIds, 'loaded diff_ids')
        r.loaded = { manifestDigest: l.handles[0].manifestDigest, sizeBytes: l.handles[0].sizeBytes, layerMediaTypes: l.layers.map((x) => x.mediaType) }
        if (kind === 'oci') discard(h) // the docker one is kept for the save below
      }
      const skopeo = () => {
        const out = path.join(work, `skopeo-${kind}-${i}`)
        const src = kind === 'docker' ? `docker-archive:${file}` : `oci-archive:${file}:big`
        const s = run(SKOPEO, ['copy', '-q', '--insecure-policy', src, `oci:${out}:big`])
        r.skopeo.push(s.ms)
        r.skopeoRss.push(s.rssKiB / 1024)
        r.sync.skopeo.push(syncAll())
        assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')).manifests.length, 1)
        discard(out)
      }
      const floor = () => {
        const out = path.join(work, `floor-${kind}-${i}`)
        const f = run(`cat '${file}' > '${out}' && sha256sum '${out}'`, [], { shell: true })
        r.floor.push(f.ms)
        r.sync.floor.push(syncAll())
        floorHashes[kind].add(f.stdout.split(' ')[0])
        discard(out)
      }
      for (const fn of rotate([ours, skopeo, floor], i)) fn()
      log(`rep ${i + 1}/${REPS} ${kind}: ours ${fmtS(r.ours.at(-1))} (${r.oursRss.at(-1).toFixed(0)} MiB), skopeo ${fmtS(r.skopeo.at(-1))}, floor ${fmtS(r.floor.at(-1))}`)
    }

    // --- save the image loaded from the docker-archive; skopeo from the layout.
    const s = m.save
    const oursSave = () => {
      const out = path.join(work, `save-ours-${i}.tar`)
      const c = runChild('save', home, out)
      s.ours.push(c.wallMs)
      s.oursRss.push(c.rssKiB / 1024)
      s.sync.ours.push(syncAll())
      s.oursBytes = fs.statSync(out).size
      s.oursLayerMediaTypes = ociArchiveLayerTypes(out)
      // Deterministic output: the same bytes every repetition.
      s.oursDigests.push(run('openssl', ['dgst', '-sha256', '-r', out]).stdout.split(' ')[0])
      discard(out)
    }
    const skopeoSave = () => {
      const out = path.join(work, `save-skopeo-${i}.tar`)
      const c = run(SKOPEO, ['copy', '-q', '--insecure-policy', `oci:${layoutDir}:big`, `oci-archive:${out}:big`])
      s.skopeo.push(c.ms)
      s.skopeoRss.push(c.rssKiB / 1024)
      s.sync.skopeo.push(syncAll())
      s.skopeoBytes = fs.statSync(out).size
      s.skopeoLayerMediaTypes = ociArchiveLayerTypes(out)
      discard(out)
    }
    for (const fn of rotate([oursSave, skopeoSave], i)) fn()
    discard(home)
    log(`rep ${i + 1}/${REPS} save: ours ${fmtS(s.ours.at(-1))}, skopeo ${fmtS(s.skopeo.at(-1))}`)
  }
  assert.equal(floorHashes.docker.size, 1)
  assert.equal(floorHashes.oci.size, 1)
  assert.equal(new Set(m.save.oursDigests).size, 1, 'saveLocal must give the same bytes every time')

  // --- what the floor and the ratios are made of (once).
  const extra = {}
  if (!QUICK) {
    const out = path.join(work, 'extra-out')
    const timed = (name, fn) => {
      const ms = fn()
      const sync = syncAll()
      extra[name] = { ms, syncMs: sync }
      discard(out)
      log(`extra ${name}: ${fmtS(ms)} (+ sync ${fmtS(sync)})`)
    }
    timed('cat', () => run(`cat '${dockerTar}' > '${out}'`, [], { shell: true }).ms)
    timed('catFsync', () => run(`cat '${dockerTar}' > '${out}' && sync '${out}'`, [], { shell: true }).ms)
    timed('sha256sum', () => run('sha256sum', [dockerTar]).ms)
    timed('opensslSha256', () => run('openssl', ['dgst', '-sha256', dockerTar]).ms)
    // skopeo asked not to gzip: the same work as our load (copy, hash, fsync).
    timed('skopeoDockerUncompressed', () =>
      run(SKOPEO, ['copy', '-q', '--insecure-policy', '--dest-oci-accept-uncompressed-layers', `docker-archive:${dockerTar}`, `oci:${out}:big`]).ms)
    timed('skopeoSaveUncompressed', () =>
      run(SKOPEO, ['copy', '-q', '--insecure-policy', '--dest-oci-accept-uncompressed-layers', `oci:${layoutDir}:big`, `oci-archive:${out}:big`]).ms)
  }
  results.extra = extra

  // --- summary.
  const sum = (r) => {
    const o = {
      ours: stats(r.ours),
      skopeo: stats(r.skopeo),
      oursPeakRssMiB: Math.max(...r.oursRss),
      skopeoPeakRssMiB: Math.max(...r.skopeoRss),
      syncAfterMs: Object.fromEntries(Object.entries(r.sync).map(([k, v]) => [k, median(v)])),
    }
    o.skopeoOverOurs = o.skopeo.median / o.ours.median
    if (r.floor) {
      o.floor = stats(r.floor)
      o.oursOverFloor = o.ours.median / o.floor.median
    }
    return o
  }
  results.loadDocker = { ...sum(m.docker), loaded: m.docker.loaded, phases: m.docker.phases }
  results.loadOci = { ...sum(m.oci), loaded: m.oci.loaded, phases: m.oci.phases }
  results.save = {
    ...sum(m.save),
    oursBytes: m.save.oursBytes,
    oursLayerMediaTypes: m.save.oursLayerMediaTypes,
    oursSha256: m.save.oursDigests[0],
    skopeoBytes: m.save.skopeoBytes,
    skopeoLayerMediaTypes: m.save.skopeoLayerMediaTypes,
  }
  results.targets = {
    skopeoOverOurs: 2,
    oursOverFloor: 1.3,
    loadPeakRssMiB: 100,
  }
  results.totalSeconds = +(msSince(tStart) / 1000).toFixed(1)
  report()
}

// --- output ------------------------------------------------------------------
function report() {
  const r = results
  const ok = (met) => (met ? 'met' : 'MISSED')
  const ph = (p) => {
    const mid = p[Math.floor(p.length / 2)]
    return `read ${fmtS(mid.readMs)} (${mid.blobEndStalls} stalls ${fmtS(mid.blobEndStallMs)}), after read ${fmtS(mid.afterReadMs)}`
  }
  const rows = []
  for (const [name, x] of [['load docker-archive', r.loadDocker], ['load OCI archive', r.loadOci]]) {
    rows.push([`${name}: ours`, fmtS(x.ours.median), fmtS(x.ours.min), `${x.oursPeakRssMiB.toFixed(0)} MiB`, '', ''])
    rows.push([`${name}: skopeo`, fmtS(x.skopeo.median), fmtS(x.skopeo.min), `${x.skopeoPeakRssMiB.toFixed(0)} MiB`, `skopeo/ours ${fmtX(x.skopeoOverOurs)}`, `>= 2x ${ok(x.skopeoOverOurs >= 2)}`])
    rows.push([`${name}: floor (cat + sha256sum)`, fmtS(x.floor.median), fmtS(x.floor.min), '', `ours/floor ${fmtX(x.oursOverFloor)}`, `<= 1.3x ${ok(x.oursOverFloor <= 1.3)}`])
    rows.push([`${name}: ours peak RSS`, '', '', `${x.oursPeakRssMiB.toFixed(0)} MiB`, `baseline ${r.childBaselineRssMiB.toFixed(0)} MiB`, `< 100 MiB ${ok(x.oursPeakRssMiB < 100)}`])
  }
  const s = r.save
  rows.push(['save oci: ours', fmtS(s.ours.median), fmtS(s.ours.min), `${s.oursPeakRssMiB.toFixed(0)} MiB`, '', ''])
  rows.push(['save oci: skopeo', fmtS(s.skopeo.median), fmtS(s.skopeo.min), `${s.skopeoPeakRssMiB.toFixed(0)} MiB`, `skopeo/ours ${fmtX(s.skopeoOverOurs)}`, `>= 2x ${ok(s.skopeoOverOurs >= 2)}`])
  const head = ['measure', 'median', 'min', 'peak RSS', 'ratio', 'target']
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ')
  console.log()
  console.log(`microsandbox archive benchmark  (${r.machine.cpus} cpus, node ${r.machine.node}, ${r.machine.skopeo}, ${r.reps} reps${r.quick ? ', QUICK' : ''})`)
  console.log(`image ${(r.inputs.imageBytes / MiB).toFixed(0)} MiB, ${LAYERS} uncompressed layers; OCI archive layers: ${[...new Set(r.inputs.ociArchiveLayerMediaTypes)]}`)
  console.log(line(head))
  console.log(w.map((n) => '-'.repeat(n)).join('  '))
  for (const row of rows) console.log(line(row))
  console.log()
  console.log(`ours, docker-archive: ${ph(r.loadDocker.phases)}`)
  console.log(`ours, OCI archive:    ${ph(r.loadOci.phases)}`)
  const sy = (x) => Object.entries(x.syncAfterMs).map(([k, v]) => `${k} ${fmtS(v)}`).join(', ')
  console.log(`sync after (median): docker ${sy(r.loadDocker)}; oci ${sy(r.loadOci)}; save ${sy(r.save)}`)
  console.log(`save sizes: ours ${s.oursBytes} B (${[...new Set(s.oursLayerMediaTypes)]}), skopeo ${s.skopeoBytes} B (${[...new Set(s.skopeoLayerMediaTypes)]})`)
  if (Object.keys(r.extra).length) {
    console.log('once: ' + Object.entries(r.extra).map(([k, v]) => `${k} ${fmtS(v.ms)} (+sync ${fmtS(v.syncMs)})`).join(', '))
  }
  console.log(`\ntotal ${r.totalSeconds} s; results in bench/archive-results.json`)
  fs.writeFileSync(path.join(HERE, 'archive-results.json'), JSON.stringify(r, null, 2) + '\n')
}
