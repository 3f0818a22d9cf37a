// The cache benchmark: `npm run bench` (after `npm run build`).
//
// Builds synthetic cache homes once (bench/synth.mjs) in a temp directory,
// then measures, in one process, against the targets of the design:
//
//   list     Image.listLocal on 10,000 references, cold (index.json just
//            replaced, as a pull or remove replaces it) and warm, against
//            the floor: JSON.parse(readFileSync(index.json))
//            + one plain object per descriptor, in this same process. <= 1.5x
//   inspect  Image.inspectLocal of random references, sequential awaits:
//            per-call median < 0.15 ms and p99 < 0.3 ms
//   remove   Image.removeLocal per call on 10,000 references over 30,000
//            blobs, and over 3,000 blobs.          independent of blob count
//   prune    Image.pruneLocal vs `umoci gc` on identical copies (flushed to
//            disk) of a cache where 2,500 of 5,000 manifests are dangling
//            and the other 2,500 are pinned by leases; both must leave the
//            same blobs (asserted). Also: the same two on the pruned copy
//            (nothing left to delete), and the unlink floor.  umoci/ours >= 5x
//   usage    Image.diskUsageLocal and Image.pruneLocal({ dryRun: true }) on
//            the 10,000-reference cache, against `du -sB1` of its blobs.
//                                                     both <= 1.2x du
//   rss      process.resourceUsage().maxRSS at the end.
//
// Prints a table and writes bench/results.json. BENCH_QUICK=1 runs fewer
// repetitions (a smoke test, not figures to quote).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'

import { runBenchmark } from './lib.mjs'
import { prng, synthesize } from './synth.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const require = createRequire(import.meta.url)
const { Image, LocalBackend } = require(path.join(ROOT, 'index.js'))

// A full GC before each timed list sample, so no sample pays for the garbage
// of the one before (10,000 objects per list; old backends' views).
v8.setFlagsFromString('--expose-gc')
const fullGc = vm.runInNewContext('gc')
const settle = async () => {
  fullGc()
  await new Promise((r) => setImmediate(r)) // let napi finalizers run
  fullGc()
}

const UMOCI = process.env.UMOCI ?? '/usr/bin/umoci'
const QUICK = process.env.BENCH_QUICK === '1'
const REPS = {
  list: QUICK ? 3 : 15,
  listCold: QUICK ? 3 : 15,
  inspect: QUICK ? 200 : 2000,
  remove: QUICK ? 20 : 60,
  prune: QUICK ? 1 : 3,
  pruneFloor: 1,
  usage: QUICK ? 3 : 11,
}

// --- helpers -----------------------------------------------------------------
const now = () => process.hrtime.bigint()
const msSince = (t) => Number(process.hrtime.bigint() - t) / 1e6
const sorted = (xs) => [...xs].sort((a, b) => a - b)
const quantile = (xs, q) => {
  const s = sorted(xs)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]
}
const stats = (xs) => ({
  n: xs.length,
  median: quantile(xs, 0.5),
  min: Math.min(...xs),
  p99: quantile(xs, 0.99),
  max: Math.max(...xs),
  mean: xs.reduce((a, b) => a + b, 0) / xs.length,
})
const fmtMs = (ms) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3)) + ' ms'
const fmtX = (x) => x.toFixed(2) + 'x'
const log = (...a) => console.error(...a)

function blobSet(home) {
  return new Set(fs.readdirSync(path.join(home, 'cache', 'oci', 'blobs', 'sha256')))
}

/** Flushes dirty data of the file system the work dir is on. */
function syncDisk() {
  const r = spawnSync('sync', ['-f', work], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`sync -f ${work} failed: ${r.stderr}`)
}

/**
 * Copies a cache home for a destructive run. Blobs in `keep` (the ones no
 * correct GC deletes) are hard-linked: they are only read, never written,
 * and linking them makes copies and the final cleanup several times
 * cheaper. Every blob a GC deletes is a real copy with its own inode and
 * data blocks, so deleting it costs what deleting a cached blob costs.
 */
function copyForGc(src, dst, keep) {
  const oci = (h) => path.join(h, 'cache', 'oci')
  const blobs = (h) => path.join(oci(h), 'blobs', 'sha256')
  fs.mkdirSync(blobs(dst), { recursive: true })
  fs.mkdirSync(path.join(dst, 'cache', 'tmp'), { recursive: true })
  fs.mkdirSync(path.join(dst, 'leases'), { recursive: true })
  fs.writeFileSync(path.join(dst, 'cache', 'lock'), '')
  for (const f of ['oci-layout', 'index.json']) fs.copyFileSync(path.join(oci(src), f), path.join(oci(dst), f))
  for (const f of fs.readdirSync(path.join(src, 'leases'))) {
    fs.copyFileSync(path.join(src, 'leases', f), path.join(dst, 'leases', f))
  }
  for (const name of fs.readdirSync(blobs(src))) {
    const from = path.join(blobs(src), name)
    const to = path.join(blobs(dst), name)
    if (keep.has(name)) fs.linkSync(from, to)
    else fs.copyFileSync(from, to)
  }
}

/** The floor of `list`: parse index.json and make one plain object per descriptor. */
// Replaces index.json with a copy of itself the way a writer does (a new
// file renamed over it), so that the next read of any backend of this home
// in this process finds a new version and builds its views again: every
// backend of one home shares them.
function replaceIndex(indexPath) {
  const tmp = `${indexPath}.bench-tmp`
  fs.copyFileSync(indexPath, tmp)
  fs.renameSync(tmp, indexPath)
}

function listFloor(indexPath) {
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'))
  return index.manifests.map((d) => {
    const a = d.annotations ?? {}
    const name = a['org.opencontainers.image.ref.name']
    const lastUsed = a['dev.microsandbox.last-used']
    return {
      reference: name.startsWith('docker.io/library/') ? name.slice(18) : name,
      sizeBytes: Number(a['dev.microsandbox.size']),
      manifestDigest: d.digest,
      architecture: d.platform?.architecture ?? null,
      os: d.platform?.os ?? null,
      layerCount: Number(a['dev.microsandbox.layers']),
      lastUsedAt: lastUsed ? new Date(lastUsed) : null,
      createdAt: new Date(a['dev.microsandbox.created']),
    }
  })
}

// --- setup -------------------------------------------------------------------
const results = {
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? null,
    memTotalGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
  },
  quick: QUICK,
  reps: REPS,
}

// `node bench/cache.mjs --child-rss HOME`: what one fresh process of ours
// peaks at doing every read this benchmark times on a cache (the parent's
// own RSS also holds the synthesized caches and every sample's backend).
if (process.argv[2] === '--child-rss') {
  const home = process.argv[3]
  const b = new LocalBackend({ home })
  const refs = (await Image.listLocal(b)).map((h) => h.reference)
  await Image.listLocal(new LocalBackend({ home }))
  for (let i = 0; i < 200; i++) await Image.inspectLocal(b, refs[(i * 7919) % refs.length])
  await Image.diskUsageLocal(b)
  await Image.pruneLocal(b, { dryRun: true })
  await Image.diskUsageLocal(new LocalBackend({ home }))
  console.log(JSON.stringify({ refs: refs.length, maxRssMiB: process.resourceUsage().maxRSS / 1024 }))
  process.exit(0)
}

// `node bench/cache.mjs --child-cold HOME usage|dry`: one call in a fresh
// process, timed from inside it (not the process's start).
if (process.argv[2] === '--child-cold') {
  const b = new LocalBackend({ home: process.argv[3] })
  const t = now()
  if (process.argv[4] === 'usage') await Image.diskUsageLocal(b)
  else await Image.pruneLocal(b, { dryRun: true })
  console.log(JSON.stringify({ ms: msSince(t) }))
  process.exit(0)
}

const tStart = now()
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-bench-'))
await runBenchmark(main, () => {
  const t = now()
  fs.rmSync(work, { recursive: true, force: true })
  log(`removed ${work} in ${fmtMs(msSince(t))}`)
})

async function main() {
  log(`work dir ${work}`)
  const umociVersion = spawnSync(UMOCI, ['--version'], { encoding: 'utf8' })
  if (umociVersion.status !== 0) throw new Error(`${UMOCI} --version failed: ${umociVersion.stderr}`)
  results.machine.umoci = umociVersion.stdout.trim()

  // The caches: big (10,000 refs, 30,000 blobs), small (10,000 refs, 3,000
  // blobs), and the prune base (5,000 refs over 2,500 of 5,000 manifests,
  // those 2,500 pinned by leases, 30,000 blobs).
  let t = now()
  const big = synthesize(path.join(work, 'big'), {})
  const small = synthesize(path.join(work, 'small'), { layers: 2000, manifests: 500, refsPerManifest: 20 })
  // Same seed and shape as `big`, so the same blobs: hard-linked from it.
  const pruneBase = synthesize(path.join(work, 'prune-base'), { keepRefs: 5000, leaseKept: true, linkBlobsFrom: big.home })
  results.synth = {
    ms: msSince(t),
    big: { refs: big.refs.length, blobs: big.blobCount, blobBytes: big.blobBytes, indexBytes: big.indexBytes },
    small: { refs: small.refs.length, blobs: small.blobCount, blobBytes: small.blobBytes, indexBytes: small.indexBytes },
    pruneBase: {
      refs: pruneBase.refs.length,
      referencedManifests: pruneBase.keptManifests,
      blobs: pruneBase.blobCount,
      reachableBlobs: pruneBase.reachable.size,
    },
  }
  syncDisk()
  results.synth.msWithSync = msSince(t)
  log(`synthesized 3 caches in ${fmtMs(results.synth.ms)} (${fmtMs(results.synth.msWithSync)} with sync)`)

  await benchList(big)
  await benchInspect(big)
  await benchUsage(big)
  benchChildRss(big)
  await benchRemove(big, small)
  await benchPrune(pruneBase)

  const ru = process.resourceUsage()
  results.maxRssMiB = +(ru.maxRSS / 1024).toFixed(1)
  results.totalSeconds = +(msSince(tStart) / 1000).toFixed(1)
  report()
}

// --- list --------------------------------------------------------------------
async function benchList(cache) {
  const indexPath = path.join(cache.home, 'cache', 'oci', 'index.json')
  const expected = listFloor(indexPath).sort((a, b) => b.createdAt - a.createdAt)

  const floor = []
  const cold = []
  const warm = []
  const warmJson = []
  const warmBackend = new LocalBackend({ home: cache.home })
  await Image.listLocal(warmBackend) // fill the backend's view

  // Interleaved, so drift (thermal, page cache, GC) hits all alike.
  for (let i = 0; i < REPS.list; i++) {
    await settle()
    let t = now()
    const f = listFloor(indexPath)
    floor.push(msSince(t))
    assert.equal(f.length, cache.refs.length)

    if (i < REPS.listCold) {
      const b = new LocalBackend({ home: cache.home })
      replaceIndex(indexPath)
      await settle()
      t = now()
      const l = await Image.listLocal(b)
      cold.push(msSince(t))
      assert.equal(l.length, cache.refs.length)
    }

    await settle()
    t = now()
    const w = await Image.listLocal(warmBackend)
    warm.push(msSince(t))
    assert.equal(w.length, cache.refs.length)

    // What a caller that reads every field pays on top: one toJSON per handle.
    await settle()
    t = now()
    const wj = (await Image.listLocal(warmBackend)).map((h) => h.toJSON())
    warmJson.push(msSince(t))
    if (i === 0) {
      assert.equal(wj.length, expected.length)
      for (const k of [0, 1, 4999, wj.length - 1]) {
        assert.equal(wj[k].reference, expected[k].reference, `list[${k}].reference`)
        assert.equal(wj[k].manifestDigest, expected[k].manifestDigest)
        assert.equal(wj[k].sizeBytes, expected[k].sizeBytes)
        assert.equal(wj[k].layerCount, expected[k].layerCount)
        assert.equal(wj[k].createdAt.getTime(), expected[k].createdAt.getTime())
      }
    }
  }
  const s = {
    floor: stats(floor),
    cold: stats(cold),
    warm: stats(warm),
    warmToJson: stats(warmJson),
  }
  s.ratioCold = s.cold.median / s.floor.median
  s.ratioWarm = s.warm.median / s.floor.median
  s.ratioWarmToJson = s.warmToJson.median / s.floor.median
  s.target = 1.5
  s.met = s.ratioCold <= 1.5 && s.ratioWarm <= 1.5
  results.list = s
  log(`list: floor ${fmtMs(s.floor.median)}, cold ${fmtMs(s.cold.median)} (${fmtX(s.ratioCold)}), warm ${fmtMs(s.warm.median)} (${fmtX(s.ratioWarm)})`)
}

// --- inspect -----------------------------------------------------------------
async function benchInspect(cache) {
  const b = new LocalBackend({ home: cache.home })
  replaceIndex(path.join(cache.home, 'cache', 'oci', 'index.json'))
  const rng = prng(7)
  const pick = () => cache.refs[rng.u32() % cache.refs.length]
  let t = now()
  const first = await Image.inspectLocal(b, pick().familiar)
  const firstMs = msSince(t)
  assert.ok(first.layers.length >= 4)

  const lat = []
  for (let i = 0; i < REPS.inspect; i++) {
    const r = pick()
    t = now()
    const d = await Image.inspectLocal(b, r.familiar)
    lat.push(msSince(t))
    if (i < 50) {
      assert.equal(d.handle.manifestDigest, r.digest)
      assert.equal(d.layers.length, d.handle.layerCount)
    }
  }
  const s = { firstCallMs: firstMs, ...stats(lat), targetMedianMs: 0.15, targetP99Ms: 0.3 }
  s.met = s.median < 0.15 && s.p99 < 0.3
  results.inspect = s
  log(`inspect: first ${fmtMs(firstMs)}, median ${fmtMs(s.median)}, p99 ${fmtMs(s.p99)}`)
}

// --- remove ------------------------------------------------------------------
async function benchRemove(big, small) {
  const bBig = new LocalBackend({ home: big.home })
  const bSmall = new LocalBackend({ home: small.home })
  const rng = prng(11)
  const victims = (refs) => rng.shuffle([...refs]).slice(0, REPS.remove)
  const vBig = victims(big.refs)
  const vSmall = victims(small.refs)
  const latBig = []
  const latSmall = []
  // Alternate the two caches call by call.
  for (let i = 0; i < REPS.remove; i++) {
    let t = now()
    await Image.removeLocal(bBig, vBig[i].familiar)
    latBig.push(msSince(t))
    t = now()
    await Image.removeLocal(bSmall, vSmall[i].familiar)
    latSmall.push(msSince(t))
  }
  const left = (c) => JSON.parse(fs.readFileSync(path.join(c.home, 'cache', 'oci', 'index.json'), 'utf8')).manifests.length
  assert.equal(left(big), big.refs.length - REPS.remove)
  assert.equal(left(small), small.refs.length - REPS.remove)
  assert.equal(blobSet(big.home).size, big.blobCount, 'remove must not delete blobs')

  const s = {
    big: { blobs: big.blobCount, refs: big.refs.length, ...stats(latBig) },
    small: { blobs: small.blobCount, refs: small.refs.length, ...stats(latSmall) },
  }
  s.ratio = s.big.median / s.small.median
  // "Independent of blob count": 10x the blobs costs within 25% per call.
  s.tolerance = 1.25
  s.met = s.ratio <= s.tolerance
  results.remove = s
  log(`remove: ${big.blobCount} blobs ${fmtMs(s.big.median)}, ${small.blobCount} blobs ${fmtMs(s.small.median)} (${fmtX(s.ratio)})`)
}

// --- prune -------------------------------------------------------------------
// Prune with no options drops every reference no lease pins (DESIGN.md 6),
// so the base cache pins its 2,500 referenced manifests with leases (as
// running sandboxes would); umoci gc keeps what index.json references.
// Both must then keep exactly the same blobs. Each repetition works on
// fresh copies flushed to disk (`sync`): freshly written files that are
// still dirty in the page cache unlink several times faster than files on
// disk, which a real cache's are.
async function benchPrune(base) {
  const ours = []
  const umoci = []
  const floor = []
  const oursNoop = []
  const umociNoop = []
  const reports = []
  const expected = base.reachable
  const blobsOf = (home) => path.join(home, 'cache', 'oci', 'blobs', 'sha256')
  for (let i = 0; i < REPS.prune; i++) {
    const a = path.join(work, `prune-ours-${i}`)
    const u = path.join(work, `prune-umoci-${i}`)
    const f = path.join(work, `prune-floor-${i}`)
    const withFloor = i < REPS.pruneFloor
    for (const dst of withFloor ? [a, u, f] : [a, u]) copyForGc(base.home, dst, expected)
    syncDisk()
    assert.equal(blobSet(a).size, base.blobCount)

    const runOurs = async () => {
      const b = new LocalBackend({ home: a })
      let t = now()
      const rep = await Image.pruneLocal(b)
      ours.push(msSince(t))
      reports.push(rep)
      t = now()
      const again = await Image.pruneLocal(new LocalBackend({ home: a }))
      oursNoop.push(msSince(t))
      assert.equal(again.manifestsRemoved + again.configsRemoved + again.layersRemoved, 0)
    }
    const gc = () => {
      const t = now()
      const r = spawnSync(UMOCI, ['gc', '--layout', path.join(u, 'cache', 'oci')], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`umoci gc failed (${r.status}): ${r.stderr}`)
      return msSince(t)
    }
    const runUmoci = () => {
      umoci.push(gc())
      umociNoop.push(gc())
    }
    // The floor of any sweep: list the directory and unlink what goes,
    // knowing the answer in advance.
    const runFloor = () => {
      const dir = blobsOf(f)
      const t = now()
      for (const name of fs.readdirSync(dir)) if (!expected.has(name)) fs.unlinkSync(path.join(dir, name))
      floor.push(msSince(t))
    }
    // Rotate which goes first.
    const runs = withFloor ? [runOurs, runUmoci, runFloor] : [runOurs, runUmoci]
    for (let k = 0; k < runs.length; k++) await runs[(i + k) % runs.length]()

    const left = blobSet(a)
    const leftU = blobSet(u)
    const onlyOurs = [...left].filter((h) => !leftU.has(h))
    const onlyUmoci = [...leftU].filter((h) => !left.has(h))
    if (onlyOurs.length || onlyUmoci.length) {
      throw new Error(
        `prune and umoci gc disagree: ${onlyOurs.length} blobs only ours kept ` +
          `(e.g. ${onlyOurs.slice(0, 3)}), ${onlyUmoci.length} only umoci kept (e.g. ${onlyUmoci.slice(0, 3)})`,
      )
    }
    const missing = [...expected].filter((h) => !left.has(h))
    const extra = [...left].filter((h) => !expected.has(h))
    if (missing.length || extra.length) {
      throw new Error(`prune left the wrong blobs: ${missing.length} reachable deleted, ${extra.length} unreachable kept`)
    }
    const refsLeft = JSON.parse(fs.readFileSync(path.join(a, 'cache', 'oci', 'index.json'), 'utf8')).manifests.length
    assert.equal(refsLeft, base.refs.length, 'prune must keep the references the leases pin')
  }
  const rep = reports[0]
  const deleted = base.blobCount - expected.size
  assert.equal(rep.manifestsRemoved + rep.configsRemoved + rep.layersRemoved, deleted, 'prune report counts')
  const s = {
    blobsBefore: base.blobCount,
    blobsAfter: expected.size,
    blobsDeleted: deleted,
    report: rep,
    ours: stats(ours),
    umoci: stats(umoci),
    unlinkFloor: stats(floor),
    oursNothingToDelete: stats(oursNoop),
    umociNothingToDelete: stats(umociNoop),
  }
  s.ratio = s.umoci.median / s.ours.median
  s.ratioNothingToDelete = s.umociNothingToDelete.median / s.oursNothingToDelete.median
  s.oursOverFloor = s.ours.median / s.unlinkFloor.median
  s.umociOverFloor = s.umoci.median / s.unlinkFloor.median
  s.target = 5
  s.met = s.ratio >= 5
  results.prune = s
  log(`prune: ours ${fmtMs(s.ours.median)}, umoci gc ${fmtMs(s.umoci.median)} (${fmtX(s.ratio)}), unlink floor ${fmtMs(s.unlinkFloor.median)}; ` +
    `nothing to delete: ours ${fmtMs(s.oursNothingToDelete.median)}, umoci ${fmtMs(s.umociNothingToDelete.median)} (${fmtX(s.ratioNothingToDelete)})`)
}

// --- disk usage and the prune dry run ------------------------------------------
// On the 10,000-reference cache (30,000 blobs), before remove touches it:
// Image.diskUsageLocal and Image.pruneLocal({ dryRun: true }), each against
// `du -sB1` of blobs/sha256 (a total only) run the same number of times.
async function benchUsage(cache) {
  const backend = new LocalBackend({ home: cache.home })
  const blobsDir = path.join(cache.home, 'cache', 'oci', 'blobs', 'sha256')
  const usage = []
  const dry = []
  const du = []
  let last = null
  for (let i = 0; i < REPS.usage; i++) {
    await settle()
    let t = now()
    last = await Image.diskUsageLocal(backend)
    usage.push(msSince(t))
    await settle()
    t = now()
    const d = await Image.pruneLocal(backend, { dryRun: true })
    dry.push(msSince(t))
    assert.equal(d.dryRun, true)
    assert.equal(d.bytesReclaimed, last.reclaimableBytes)
    assert.equal(d.removed.length, cache.refs.length)
    t = now()
    const r = spawnSync('du', ['-sB1', blobsDir], { encoding: 'utf8' })
    du.push(msSince(t))
    if (r.status !== 0) throw new Error(`du failed: ${r.stderr}`)
  }
  assert.equal(last.images.length, cache.refs.length)
  // Cold: the call timed in a fresh process (what a CLI run pays; every
  // backend of a home in one process shares what it has read), 3 each.
  const coldUsage = []
  const coldDry = []
  for (let i = 0; i < 3; i++) {
    coldUsage.push(childColdMs(cache.home, 'usage'))
    coldDry.push(childColdMs(cache.home, 'dry'))
  }
  const files = fs.readdirSync(blobsDir)
  assert.equal(files.length, cache.blobCount)
  const s = { usage: stats(usage), dryRun: stats(dry), du: stats(du), coldUsage: stats(coldUsage), coldDryRun: stats(coldDry), target: 1.2 }
  s.usageOverDu = s.usage.median / s.du.median
  s.dryRunOverDu = s.dryRun.median / s.du.median
  s.met = s.usageOverDu <= 1.2 && s.dryRunOverDu <= 1.2
  results.usage = s
  log(`diskUsage ${fmtMs(s.usage.median)} (cold ${fmtMs(s.coldUsage.median)}), prune dry run ${fmtMs(s.dryRun.median)} (cold ${fmtMs(s.coldDryRun.median)}), du -s ${fmtMs(s.du.median)}`)
}

function childColdMs(home, op) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child-cold', home, op], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop()).ms
}

// --- a process of ours alone -------------------------------------------------
function benchChildRss(cache) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child-rss', cache.home], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`)
  const out = JSON.parse(r.stdout.trim().split('\n').pop())
  assert.equal(out.refs, cache.refs.length)
  results.childRss = { ...out, target: 100, met: out.maxRssMiB < 100 }
  log(`one process: list, inspect, diskUsage, dry run: peak RSS ${out.maxRssMiB.toFixed(0)} MiB`)
}

// --- output ------------------------------------------------------------------
function report() {
  const r = results
  const rows = [
    ['list, floor (parse + map)', fmtMs(r.list.floor.median), fmtMs(r.list.floor.min), '', ''],
    ['list, cold (new index.json)', fmtMs(r.list.cold.median), fmtMs(r.list.cold.min), fmtX(r.list.ratioCold) + ' floor', '<= 1.5x ' + (r.list.ratioCold <= 1.5 ? 'ok' : 'MISSED')],
    ['list, warm', fmtMs(r.list.warm.median), fmtMs(r.list.warm.min), fmtX(r.list.ratioWarm) + ' floor', '<= 1.5x ' + (r.list.ratioWarm <= 1.5 ? 'ok' : 'MISSED')],
    ['list, warm + toJSON each', fmtMs(r.list.warmToJson.median), fmtMs(r.list.warmToJson.min), fmtX(r.list.ratioWarmToJson) + ' floor', '(info)'],
    ['inspect, per call', fmtMs(r.inspect.median), fmtMs(r.inspect.min), 'p99 ' + fmtMs(r.inspect.p99), '< 0.15 / 0.3 ms ' + (r.inspect.met ? 'ok' : 'MISSED')],
    [`remove, ${r.remove.big.blobs} blobs`, fmtMs(r.remove.big.median), fmtMs(r.remove.big.min), 'p99 ' + fmtMs(r.remove.big.p99), ''],
    [`remove, ${r.remove.small.blobs} blobs`, fmtMs(r.remove.small.median), fmtMs(r.remove.small.min), 'p99 ' + fmtMs(r.remove.small.p99), ''],
    ['remove, 10x blobs / 1x', '', '', fmtX(r.remove.ratio), `<= ${r.remove.tolerance}x ` + (r.remove.met ? 'ok' : 'MISSED')],
    ['diskUsage, 10,000 refs', fmtMs(r.usage.usage.median), fmtMs(r.usage.usage.min), fmtX(r.usage.usageOverDu) + ' du -s', '<= 1.2x ' + (r.usage.usageOverDu <= 1.2 ? 'ok' : 'MISSED')],
    ['prune dry run, 10,000 refs', fmtMs(r.usage.dryRun.median), fmtMs(r.usage.dryRun.min), fmtX(r.usage.dryRunOverDu) + ' du -s', '<= 1.2x ' + (r.usage.dryRunOverDu <= 1.2 ? 'ok' : 'MISSED')],
    ['diskUsage, cold (new process)', fmtMs(r.usage.coldUsage.median), fmtMs(r.usage.coldUsage.min), '', '(info)'],
    ['prune dry run, cold', fmtMs(r.usage.coldDryRun.median), fmtMs(r.usage.coldDryRun.min), '', '(info)'],
    ['du -sB1 blobs/sha256', fmtMs(r.usage.du.median), fmtMs(r.usage.du.min), '', '(info)'],
    ['prune, Image.pruneLocal', fmtMs(r.prune.ours.median), fmtMs(r.prune.ours.min), `${r.prune.blobsDeleted} blobs deleted`, ''],
    ['prune, umoci gc', fmtMs(r.prune.umoci.median), fmtMs(r.prune.umoci.min), fmtX(r.prune.ratio) + ' slower', '>= 5x ' + (r.prune.met ? 'ok' : 'MISSED')],
    ['prune, unlink floor', fmtMs(r.prune.unlinkFloor.median), fmtMs(r.prune.unlinkFloor.min), `ours ${fmtX(r.prune.oursOverFloor)} floor`, '(info)'],
    ['prune again, ours', fmtMs(r.prune.oursNothingToDelete.median), fmtMs(r.prune.oursNothingToDelete.min), 'nothing to delete', ''],
    ['prune again, umoci gc', fmtMs(r.prune.umociNothingToDelete.median), fmtMs(r.prune.umociNothingToDelete.min), fmtX(r.prune.ratioNothingToDelete) + ' slower', '(info)'],
    ['peak RSS, one process of ours', `${r.childRss.maxRssMiB.toFixed(0)} MiB`, '', 'list, inspect, usage, dry run', '< 100 MiB ' + (r.childRss.met ? 'ok' : 'MISSED')],
    ['peak RSS, this benchmark', `${r.maxRssMiB} MiB`, '', '', '(info)'],
  ]
  const head = ['measure', 'median', 'min', 'ratio / p99', 'target']
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ')
  console.log()
  console.log(`microsandbox cache benchmark  (${r.machine.cpus} cpus, node ${r.machine.node}, ${r.machine.umoci}${r.quick ? ', QUICK' : ''})`)
  console.log(line(head))
  console.log(w.map((n) => '-'.repeat(n)).join('  '))
  for (const row of rows) console.log(line(row))
  console.log(`\ntotal ${r.totalSeconds} s; results in bench/results.json`)
  fs.writeFileSync(path.join(HERE, 'results.json'), JSON.stringify(r, null, 2) + '\n')
}
