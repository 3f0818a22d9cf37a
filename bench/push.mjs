// The push benchmark: `node bench/push.mjs` (after `npm run build`).
//
// Builds (once, kept in target/bench-push/) a ~1 GiB image of 6 layers:
// each a gzip tar of one 170 MiB file of seeded AES-CTR keystream
// (incompressible, as compressed layers are), and loads it into a cache
// home. Then, side by side in one run, REPS repetitions each, the order
// rotating, each into a fresh Debian docker-registry on 127.0.0.1 (its
// storage deleted afterwards):
//
//   ours    Image.pushLocal(backend, 'big', { to: ADDR/big:1 }) in a child
//           node process (peak RSS from /usr/bin/time)
//   skopeo  `skopeo copy oci:LAYOUT:big docker://ADDR/big:1`
//
// Every push is followed by a `sync` (timed apart, not in the ratio), and
// checked: the registry's manifest has the image's digest (ours; skopeo
// writes the manifest anew, so its layers are compared).
// Target: skopeo / ours >= 1.5x. Prints a table and writes
// bench/push-results.json (git-ignored). BENCH_QUICK=1: one repetition.
// `node bench/push.mjs --child HOME REF DEST` is the child mode.

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
const require = createRequire(import.meta.url)

if (process.argv[2] === '--child') {
  const [home, ref, to] = process.argv.slice(3)
  const { Image, LocalBackend } = require(path.join(ROOT, 'index.js'))
  const t0 = performance.now()
  const report = await Image.pushLocal(new LocalBackend({ home }), ref, { to })
  console.log(JSON.stringify({ ms: performance.now() - t0, report }))
  process.exit(0)
}

const QUICK = process.env.BENCH_QUICK === '1'
const REPS = QUICK ? 1 : 3
const LAYERS = 6
const FILE_BYTES = 170 * MiB
const SKOPEO = process.env.SKOPEO ?? 'skopeo'
const IMAGE_DIR = path.join(ROOT, 'target', 'bench-push', 'v2')

/**
 * A gzip layer (level 1) of a tar of one file of keystream, written to
 * `file`; gzip, since skopeo compresses an uncompressed layer on its way
 * to a registry and the two would then not send the same bytes.
 */
function writeLayer(file, seed) {
  const key = crypto.createHash('sha256').update(`msb-push-bench-${seed}`).digest()
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const tar = Buffer.concat([
    tarHeader('data/', 0, 0o755, '5'),
    tarHeader(`data/blob-${seed}.bin`, FILE_BYTES, 0o644, '0'),
    cipher.update(Buffer.alloc(FILE_BYTES)),
    Buffer.alloc((512 - (FILE_BYTES % 512)) % 512 + 1024),
  ])
  const diffId = 'sha256:' + crypto.createHash('sha256').update(tar).digest('hex')
  const gz = zlib.gzipSync(tar, { level: 1 })
  fs.writeFileSync(file, gz)
  return { digest: 'sha256:' + crypto.createHash('sha256').update(gz).digest('hex'), diffId, size: gz.length }
}

function buildLayout(dir) {
  const done = path.join(dir, 'done.json')
  if (fs.existsSync(done)) return JSON.parse(fs.readFileSync(done, 'utf8'))
  fs.rmSync(dir, { recursive: true, force: true })
  const blobs = path.join(dir, 'blobs', 'sha256')
  fs.mkdirSync(blobs, { recursive: true })
  const layers = []
  for (let i = 0; i < LAYERS; i++) {
    const tmp = path.join(dir, 'layer.tmp')
    const l = writeLayer(tmp, i)
    fs.renameSync(tmp, path.join(blobs, l.digest.slice(7)))
    layers.push(l)
  }
  const image = writeLayout(dir, layers, 'application/vnd.oci.image.layer.v1.tar+gzip')
  fs.writeFileSync(done, JSON.stringify(image))
  return image
}

const results = { date: new Date().toISOString(), machine: machine(), quick: QUICK, reps: REPS }
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-push-bench-'))
const skopeoTmp = path.join(work, 'skopeo-tmp')
fs.mkdirSync(skopeoTmp)
const { run, syncAll, discard } = runner(work, { TMPDIR: skopeoTmp })
const registries = new Set()
const cleanup = () => {
  for (const r of registries) r.child.kill()
  fs.rmSync(work, { recursive: true, force: true })
}
await runBenchmark(main, cleanup)
process.exit(0)

/** The manifest digest a registry has for `big:1`, and its layer digests. */
function pushed(addr) {
  const r = run(SKOPEO, ['inspect', '--tls-verify=false', '--raw', `docker://${addr}/big:1`])
  const layers = JSON.parse(r.stdout).layers.map((l) => l.digest)
  return { digest: 'sha256:' + crypto.createHash('sha256').update(r.stdout).digest('hex'), layers }
}

async function main() {
  results.machine.skopeo = run(SKOPEO, ['--version']).stdout.trim()
  let t = now()
  const image = buildLayout(IMAGE_DIR)
  log(`image: ${(image.bytes / MiB).toFixed(0)} MiB in ${LAYERS} layers (${fmtS(msSince(t))})`)
  const home = path.join(work, 'home')
  const { Image, LocalBackend } = require(path.join(ROOT, 'index.js'))
  t = now()
  await Image.loadLocal(new LocalBackend({ home }), IMAGE_DIR)
  syncAll()
  log(`loaded into the cache in ${fmtS(msSince(t))}`)

  const m = { ours: [], skopeo: [], oursRss: [], skopeoRss: [], cpu: { ours: [], skopeo: [] }, sync: { ours: [], skopeo: [] } }
  const fresh = async (name) => {
    const dir = path.join(work, name)
    fs.mkdirSync(dir)
    const reg = await startRegistry(dir)
    registries.add(reg)
    return { ...reg, dir }
  }
  const done = (reg) => {
    reg.child.kill()
    registries.delete(reg)
    discard(reg.dir)
  }
  const rotate = (fns, i) => fns.map((_, k) => fns[(i + k) % fns.length])
  for (let i = 0; i < REPS; i++) {
    const ours = async () => {
      const reg = await fresh(`reg-ours-${i}`)
      const r = run(process.execPath, [SELF, '--child', home, 'big', `${reg.addr}/big:1`])
      const out = JSON.parse(r.stdout.trim().split('\n').pop())
      m.ours.push(r.ms)
      m.cpu.ours.push(r.cpuMs)
      m.oursRss.push(r.rssKiB / 1024)
      m.sync.ours.push(syncAll())
      assert.equal(out.report.manifestDigest, image.manifest.digest)
      assert.equal(out.report.blobsUploaded, LAYERS + 1)
      assert.equal(pushed(reg.addr).digest, image.manifest.digest)
      done(reg)
    }
    const skopeo = async () => {
      const reg = await fresh(`reg-skopeo-${i}`)
      const r = run(SKOPEO, ['copy', '-q', '--insecure-policy', '--dest-tls-verify=false', `oci:${IMAGE_DIR}:big`, `docker://${reg.addr}/big:1`])
      m.skopeo.push(r.ms)
      m.cpu.skopeo.push(r.cpuMs)
      m.skopeoRss.push(r.rssKiB / 1024)
      m.sync.skopeo.push(syncAll())
      // skopeo writes the manifest anew (another digest); the layers are the same.
      assert.deepEqual(pushed(reg.addr).layers, image.layers.map((l) => l.digest))
      done(reg)
    }
    for (const fn of rotate([ours, skopeo], i)) await fn()
    log(`rep ${i + 1}/${REPS}: ours ${fmtS(m.ours.at(-1))} (cpu ${fmtS(m.cpu.ours.at(-1))}, ${m.oursRss.at(-1).toFixed(0)} MiB), skopeo ${fmtS(m.skopeo.at(-1))} (cpu ${fmtS(m.cpu.skopeo.at(-1))})`)
  }
  const ratio = median(m.skopeo) / median(m.ours)
  results.image = { bytes: image.bytes, layers: image.layers.map((l) => l.size) }
  results.push = {
    ours: stats(m.ours),
    skopeo: stats(m.skopeo),
    oursRssMiB: stats(m.oursRss),
    skopeoRssMiB: stats(m.skopeoRss),
    cpuMs: { ours: stats(m.cpu.ours), skopeo: stats(m.cpu.skopeo) },
    sync: { ours: stats(m.sync.ours), skopeo: stats(m.sync.skopeo) },
    skopeoOverOurs: ratio,
    skopeoOverOursMin: Math.min(...m.skopeo) / Math.min(...m.ours),
  }
  console.log(`\n${(image.bytes / MiB).toFixed(0)} MiB, ${LAYERS} layers, loopback registry; ${REPS} reps, medians (min)`)
  for (const [name, xs, rss] of [['push: ours', m.ours, m.oursRss], ['push: skopeo', m.skopeo, m.skopeoRss]]) {
    console.log(`${name.padEnd(14)} ${fmtS(median(xs)).padStart(9)} ${('(' + fmtS(Math.min(...xs)) + ')').padStart(10)} ${Math.max(...rss).toFixed(0).padStart(5)} MiB`)
  }
  console.log(`skopeo/ours ${fmtX(ratio)} (min ${fmtX(results.push.skopeoOverOursMin)})  >= 1.5x ${ratio >= 1.5 ? 'met' : 'MISSED'}`)
  console.log(`cpu (user + sys, median): ours ${fmtS(median(m.cpu.ours))}, skopeo ${fmtS(median(m.cpu.skopeo))} (the registry's own not counted)`)
  console.log(`sync after (median): ours ${fmtS(median(m.sync.ours))}, skopeo ${fmtS(median(m.sync.skopeo))}`)
  fs.writeFileSync(path.join(HERE, 'push-results.json'), JSON.stringify(results, null, 2))
}
