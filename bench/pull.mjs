// The pull benchmark: `node bench/pull.mjs` (after `npm run build`).
//
// Builds (once, kept in target/bench-pull/) a ~1 GiB image of 6 gzip layers:
// each a real tar of one file whose 4 MiB blocks are half seeded AES-CTR
// keystream, half text, so gzip halves it as it does typical layers. It
// starts Debian's docker-registry on 127.0.0.1, pushes the image with
// skopeo, then measures side by side, in one run, REPS repetitions each
// (a fresh cache or output per repetition; which tool goes first rotates):
//
//   ours    Image.pullLocal into an empty cache home (in a child node
//           process; peak RSS from /usr/bin/time)
//   skopeo  `skopeo copy docker://127.0.0.1:PORT/big:1 oci:NEWDIR:big`
//   floor   the same blobs (layers, config, manifest) fetched by one `curl`
//           per blob, all at once, to files
//
// Then a fully cached re-pull: ours `pull --policy always` into a home that
// holds the image, against skopeo copying into a layout that holds it.
//
// Targets: skopeo / ours >= 1.5x, ours / floor <= 1.3x, peak RSS < 100 MiB;
// a fully cached re-pull within 2x of skopeo's.
// Every timed command is followed by a `sync` (timed apart, recorded, not
// in the ratios). Prints a table and writes bench/pull-results.json
// (git-ignored). BENCH_QUICK=1: one repetition (a smoke test).
// `node bench/pull.mjs --child HOME REF` is the child mode.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import zlib from 'node:zlib'
import { MiB, fmtS, fmtX, log, machine, median, msSince, now, runner, runBenchmark, startRegistry, stats, tarHeader, writeLayout } from './lib.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const SELF = fileURLToPath(import.meta.url)

if (process.argv[2] === '--child') {
  const [home, ref, policy = 'missing'] = process.argv.slice(3)
  const require = createRequire(import.meta.url)
  const { Image, LocalBackend } = require(path.join(ROOT, 'index.js'))
  const t0 = performance.now()
  const h = await Image.pullLocal(new LocalBackend({ home }), ref, { policy })
  console.log(JSON.stringify({ ms: performance.now() - t0, handle: h.toJSON(), maxRssKiB: process.resourceUsage().maxRSS }))
  process.exit(0)
}

const QUICK = process.env.BENCH_QUICK === '1'
const REPS = QUICK ? 1 : 3
const LAYERS = 6
const LAYER_FILE_BYTES = 340 * MiB // gzip makes each ~170 MiB
const SKOPEO = process.env.SKOPEO ?? 'skopeo'
const IMAGE_DIR = path.join(ROOT, 'target', 'bench-pull', 'v1')

/**
 * Writes a gzip layer: a tar of `data/<name>` holding `size` bytes whose
 * 4 MiB blocks are 2 MiB of keystream (seeded) and 2 MiB of text.
 * Returns the compressed blob's digest and size and the diff_id.
 */
async function writeLayer(file, seed, name, size) {
  const key = crypto.createHash('sha256').update(`msb-pull-bench-layer-${seed}`).digest()
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const text = Buffer.from(`layer ${seed}: the quick brown fox jumps over the lazy dog 0123456789\n`.repeat(1 << 15)).subarray(0, 2 * MiB)
  const zeros = Buffer.alloc(2 * MiB)
  const diff = crypto.createHash('sha256')
  const gz = zlib.createGzip({ level: 6 })
  const out = fs.createWriteStream(file)
  const blob = crypto.createHash('sha256')
  gz.on('data', (b) => blob.update(b))
  gz.pipe(out)
  const put = async (b) => {
    diff.update(b)
    if (!gz.write(b)) await new Promise((r) => gz.once('drain', r))
  }
  await put(tarHeader('data/', 0, 0o755, '5'))
  await put(tarHeader(`data/${name}`, size, 0o644, '0'))
  for (let left = size; left > 0; ) {
    const n = Math.min(left, 4 * MiB)
    const half = Math.min(n, 2 * MiB)
    await put(cipher.update(zeros.subarray(0, half)))
    if (n > half) await put(text.subarray(0, n - half))
    left -= n
  }
  await put(Buffer.alloc((512 - (size % 512)) % 512 + 1024))
  gz.end()
  await new Promise((r) => out.on('close', r))
  return { digest: 'sha256:' + blob.digest('hex'), size: fs.statSync(file).size, diffId: 'sha256:' + diff.digest('hex') }
}

/** The OCI layout of the bench image (`big`), built once. */
async function buildLayout(dir) {
  const done = path.join(dir, 'done.json')
  if (fs.existsSync(done)) return JSON.parse(fs.readFileSync(done, 'utf8'))
  fs.rmSync(dir, { recursive: true, force: true })
  const blobs = path.join(dir, 'blobs', 'sha256')
  fs.mkdirSync(blobs, { recursive: true })
  const layers = []
  for (let i = 0; i < LAYERS; i++) {
    const tmp = path.join(dir, 'layer.tmp')
    const l = await writeLayer(tmp, i, `blob-${i}.bin`, LAYER_FILE_BYTES)
    fs.renameSync(tmp, path.join(blobs, l.digest.slice(7)))
    layers.push(l)
    log(`built layer ${i + 1}/${LAYERS}: ${(l.size / MiB).toFixed(0)} MiB`)
  }
  const image = writeLayout(dir, layers, 'application/vnd.oci.image.layer.v1.tar+gzip')
  fs.writeFileSync(done, JSON.stringify(image))
  return image
}

const results = { date: new Date().toISOString(), machine: machine(), quick: QUICK, reps: REPS }
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-pull-bench-'))
const skopeoTmp = path.join(work, 'skopeo-tmp')
fs.mkdirSync(skopeoTmp)
const { run, syncAll, discard } = runner(work, { TMPDIR: skopeoTmp })
let registry = null
const cleanup = () => {
  registry?.child.kill()
  fs.rmSync(work, { recursive: true, force: true })
}
await runBenchmark(main, cleanup)
process.exit(0)

async function main() {
  results.machine.skopeo = run(SKOPEO, ['--version']).stdout.trim()
  results.machine.curl = run('curl', ['--version']).stdout.split('\n')[0]
  let t = now()
  const image = await buildLayout(IMAGE_DIR)
  log(`image: ${(image.bytes / MiB).toFixed(0)} MiB in ${LAYERS} gzip layers (${fmtS(msSince(t))})`)
  fs.mkdirSync(path.join(work, 'registry'))
  registry = await startRegistry(path.join(work, 'registry'))
  t = now()
  run(SKOPEO, ['copy', '-q', '--insecure-policy', '--dest-tls-verify=false', `oci:${IMAGE_DIR}:big`, `docker://${registry.addr}/big:1`])
  log(`pushed to ${registry.addr} in ${fmtS(msSince(t))}`)
  syncAll()
  const ref = `${registry.addr}/big:1`
  const blobs = [...image.layers.map((l) => l.digest), image.config.digest]

  const m = { cpu: { ours: [], skopeo: [], floor: [] }, ours: [], skopeo: [], floor: [], oursRss: [], skopeoRss: [], floorRss: [], sync: { ours: [], skopeo: [], floor: [] } }
  const rotate = (fns, i) => fns.map((_, k) => fns[(i + k) % fns.length])
  for (let i = 0; i < REPS; i++) {
    const ours = () => {
      const home = path.join(work, `home-${i}`)
      const r = run(process.execPath, [SELF, '--child', home, ref])
      const out = JSON.parse(r.stdout.trim().split('\n').pop())
      m.ours.push(r.ms)
      m.cpu.ours.push(r.cpuMs)
      m.oursRss.push((r.rssKiB ?? out.maxRssKiB) / 1024)
      m.sync.ours.push(syncAll())
      assert.equal(out.handle.manifestDigest, image.manifest.digest)
      assert.equal(out.handle.layerCount, LAYERS)
      discard(home)
    }
    const skopeo = () => {
      const dir = path.join(work, `skopeo-${i}`)
      const r = run(SKOPEO, ['copy', '-q', '--insecure-policy', '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:big`])
      m.skopeo.push(r.ms)
      m.cpu.skopeo.push(r.cpuMs)
      m.skopeoRss.push(r.rssKiB / 1024)
      m.sync.skopeo.push(syncAll())
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).manifests[0].digest, image.manifest.digest)
      discard(dir)
    }
    const floor = () => {
      const dir = path.join(work, `floor-${i}`)
      fs.mkdirSync(dir)
      const base = `http://${registry.addr}/v2/big`
      const gets = [
        `curl -sSf -o '${dir}/manifest' -H 'Accept: application/vnd.oci.image.manifest.v1+json' '${base}/manifests/1'`,
        ...blobs.map((d) => `curl -sSf -o '${dir}/${d.slice(7)}' '${base}/blobs/${d}'`),
      ]
      const r = run(`${gets.map((g) => `${g} &`).join(' ')} wait`, [], { shell: true })
      m.floor.push(r.ms)
      m.cpu.floor.push(r.cpuMs)
      m.floorRss.push(r.rssKiB / 1024)
      m.sync.floor.push(syncAll())
      for (const l of image.layers) assert.equal(fs.statSync(path.join(dir, l.digest.slice(7))).size, l.size)
      discard(dir)
    }
    for (const fn of rotate([ours, skopeo, floor], i)) fn()
    log(
      `rep ${i + 1}/${REPS}: ours ${fmtS(m.ours.at(-1))} (${m.oursRss.at(-1).toFixed(0)} MiB, cpu ${fmtS(m.cpu.ours.at(-1))}), ` +
        `skopeo ${fmtS(m.skopeo.at(-1))} (cpu ${fmtS(m.cpu.skopeo.at(-1))}), floor ${fmtS(m.floor.at(-1))} (cpu ${fmtS(m.cpu.floor.at(-1))})`,
    )
  }

  // A fully cached re-pull: everything is in place, only the manifest is
  // asked for (and, for skopeo, each blob's presence checked).
  const cachedHome = path.join(work, 'home-cached')
  run(process.execPath, [SELF, '--child', cachedHome, ref])
  const cachedDir = path.join(work, 'skopeo-cached')
  run(SKOPEO, ['copy', '-q', '--insecure-policy', '--src-tls-verify=false', `docker://${ref}`, `oci:${cachedDir}:big`])
  syncAll()
  m.cached = { ours: [], oursProcess: [], skopeo: [] }
  for (let i = 0; i < 5; i++) {
    const cachedOurs = () => {
      const r = run(process.execPath, [SELF, '--child', cachedHome, ref, 'always'])
      const out = JSON.parse(r.stdout.trim().split('\n').pop())
      assert.equal(out.handle.manifestDigest, image.manifest.digest)
      m.cached.ours.push(out.ms)
      m.cached.oursProcess.push(r.ms)
    }
    const cachedSkopeo = () => {
      const r = run(SKOPEO, ['copy', '-q', '--insecure-policy', '--src-tls-verify=false', `docker://${ref}`, `oci:${cachedDir}:big`])
      m.cached.skopeo.push(r.ms)
    }
    for (const fn of rotate([cachedOurs, cachedSkopeo], i)) fn()
  }

  const med = (xs) => median(xs)
  const vsSkopeo = med(m.skopeo) / med(m.ours)
  const vsFloor = med(m.ours) / med(m.floor)
  const rss = Math.max(...m.oursRss)
  // What a durable download costs at least: the curl floor plus the sync
  // that writes its files to disk (ours and skopeo fsync every blob).
  const durable = m.floor.map((f, k) => f + m.sync.floor[k])
  const vsDurable = med(m.ours) / med(durable)
  const cachedRatio = med(m.cached.ours) / med(m.cached.skopeo)
  results.cached = {
    ours: stats(m.cached.ours),
    oursProcess: stats(m.cached.oursProcess),
    skopeo: stats(m.cached.skopeo),
    oursOverSkopeo: cachedRatio,
    oursProcessOverSkopeo: med(m.cached.oursProcess) / med(m.cached.skopeo),
  }
  results.image = { bytes: image.bytes, layers: image.layers.map((l) => l.size) }
  results.pull = {
    ours: stats(m.ours),
    skopeo: stats(m.skopeo),
    floor: stats(m.floor),
    oursRssMiB: stats(m.oursRss),
    skopeoRssMiB: stats(m.skopeoRss),
    cpuMs: { ours: stats(m.cpu.ours), skopeo: stats(m.cpu.skopeo), floor: stats(m.cpu.floor) },
    sync: { ours: stats(m.sync.ours), skopeo: stats(m.sync.skopeo), floor: stats(m.sync.floor) },
    durableFloor: stats(durable),
    ratios: { skopeoOverOurs: vsSkopeo, oursOverFloor: vsFloor, oursOverDurableFloor: vsDurable, skopeoOverDurableFloor: med(m.skopeo) / med(durable) },
  }
  const met = (ok) => (ok ? 'met' : 'MISSED')
  const rows = [
    ['pull: ours', m.ours, `${Math.max(...m.oursRss).toFixed(0)} MiB`, ''],
    ['pull: skopeo', m.skopeo, `${Math.max(...m.skopeoRss).toFixed(0)} MiB`, `skopeo/ours ${fmtX(vsSkopeo)}  >= 1.5x ${met(vsSkopeo >= 1.5)}`],
    ['pull: floor (parallel curl)', m.floor, '', `ours/floor ${fmtX(vsFloor)}  <= 1.3x ${met(vsFloor <= 1.3)}`],
    ['floor + its sync (durable)', durable, '', `ours/durable ${fmtX(vsDurable)}, skopeo/durable ${fmtX(med(m.skopeo) / med(durable))}`],
  ]
  console.log(`\n${(image.bytes / MiB).toFixed(0)} MiB, ${LAYERS} gzip layers, loopback registry; ${REPS} reps, medians (min)`)
  for (const [name, xs, mem, note] of rows) {
    console.log(`${name.padEnd(30)} ${fmtS(med(xs)).padStart(9)} ${('(' + fmtS(Math.min(...xs)) + ')').padStart(10)} ${mem.padStart(8)}  ${note}`)
  }
  console.log(`ours peak RSS ${rss.toFixed(0)} MiB  < 100 MiB ${met(rss < 100)}`)
  console.log(
    `fully cached re-pull (median of 5): ours ${med(m.cached.ours).toFixed(0)} ms the call, ` +
      `${med(m.cached.oursProcess).toFixed(0)} ms a node process with it; skopeo ${med(m.cached.skopeo).toFixed(0)} ms its process: ` +
      `ours/skopeo ${fmtX(cachedRatio)} (call), ${fmtX(med(m.cached.oursProcess) / med(m.cached.skopeo))} (process)  <= 2x ${met(cachedRatio <= 2)}`,
  )
  console.log(`cpu (user + sys, median): ours ${fmtS(med(m.cpu.ours))}, skopeo ${fmtS(med(m.cpu.skopeo))}, floor ${fmtS(med(m.cpu.floor))} (the registry's own not counted)`)
  console.log(`sync after (median): ours ${fmtS(med(m.sync.ours))}, skopeo ${fmtS(med(m.sync.skopeo))}, floor ${fmtS(med(m.sync.floor))}`)
  fs.writeFileSync(path.join(HERE, 'pull-results.json'), JSON.stringify(results, null, 2))
}
