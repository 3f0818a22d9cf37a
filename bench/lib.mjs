// Helpers shared by the benchmarks: timing, statistics, the machine's
// description, tar headers, and running commands under /usr/bin/time.

import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export const MiB = 1 << 20
export const TIME = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : null

export const now = () => process.hrtime.bigint()
export const msSince = (t) => Number(process.hrtime.bigint() - t) / 1e6
export const sorted = (xs) => [...xs].sort((a, b) => a - b)
export const median = (xs) => {
  const s = sorted(xs)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
export const stats = (xs) => ({ n: xs.length, median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs })
export const fmtS = (ms) => (ms / 1000).toFixed(2) + ' s'
export const fmtX = (x) => x.toFixed(2) + 'x'
export const mbps = (bytes, ms) => bytes / MiB / (ms / 1000)
export const log = (...a) => console.error(...a)

/** What the results were measured on. */
export function machine() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? null,
    memTotalGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    kernel: os.release(),
  }
}

/** A ustar header block. */
export function tarHeader(name, size, mode, type) {
  const h = Buffer.alloc(512)
  h.write(name, 0, 100, 'utf8')
  const oct = (v, off, len) => h.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'ascii')
  oct(mode, 100, 8)
  oct(0, 108, 8) // uid
  oct(0, 116, 8) // gid
  oct(size, 124, 12)
  oct(1767225600, 136, 12) // mtime 2026-01-01
  h.fill(0x20, 148, 156) // checksum field counts as spaces
  h.write(type, 156, 1, 'ascii')
  h.write('ustar\0', 257, 6, 'ascii')
  h.write('00', 263, 2, 'ascii')
  let sum = 0
  for (const b of h) sum += b
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return h
}

/**
 * Command running for a benchmark whose scratch space is `work`:
 * `run(cmd, args, { shell })` runs under /usr/bin/time and returns its wall
 * time (measured here), peak RSS and stdout, throwing on failure;
 * (with user + system CPU time); `syncAll()` runs `sync` and returns how long it took; `discard(p)`
 * removes an output and syncs, so the next command starts clean.
 */
export function runner(work, env = {}) {
  function run(cmd, args, { shell = false } = {}) {
    const rssFile = path.join(work, 'time.out')
    const argv = shell ? ['sh', '-c', cmd] : [cmd, ...args]
    const full = TIME ? [TIME, '-o', rssFile, '-f', '%M %U %S', ...argv] : argv
    const t = now()
    const r = spawnSync(full[0], full.slice(1), {
      encoding: 'utf8',
      maxBuffer: 256 * MiB,
      env: { ...process.env, ...env },
    })
    const ms = msSince(t)
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`)
    const [rss, user, sys] = TIME ? fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop().split(' ').map(Number) : []
    return { ms, rssKiB: rss ?? null, cpuMs: TIME ? (user + sys) * 1000 : null, stdout: r.stdout }
  }
  function syncAll() {
    const t = now()
    const r = spawnSync('sync')
    if (r.status !== 0) throw new Error('sync failed')
    return msSince(t)
  }
  function discard(p) {
    fs.rmSync(p, { recursive: true, force: true })
    syncAll()
  }
  return { run, syncAll, discard }
}

/**
 * Completes an OCI layout in `dir` around layer blobs already in
 * `blobs/sha256/`: a config (`amd64`, `linux`, the layers' diff_ids), a
 * manifest labelling every layer `layerMediaType`, `index.json` naming it
 * `big`, `oci-layout`. `layers`: `{ digest, size, diffId }`.
 */
export function writeLayout(dir, layers, layerMediaType) {
  const blobs = path.join(dir, 'blobs', 'sha256')
  const putJson = (obj) => {
    const b = Buffer.from(JSON.stringify(obj))
    const hex = crypto.createHash('sha256').update(b).digest('hex')
    fs.writeFileSync(path.join(blobs, hex), b)
    return { digest: 'sha256:' + hex, size: b.length }
  }
  const created = '2026-01-01T00:00:00Z'
  const config = putJson({
    created,
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created, created_by: `bench layer ${i}` })),
  })
  const manifest = putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: layerMediaType, digest: l.digest, size: l.size })),
  })
  fs.writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'big' },
        },
      ],
    }),
  )
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  return { layers, config, manifest, bytes: layers.reduce((a, l) => a + l.size, 0) + config.size + manifest.size }
}

/**
 * Runs a benchmark's `main`, then `cleanup` (also on Ctrl-C or SIGTERM);
 * a failure is printed and makes the process exit with 1.
 */
export async function runBenchmark(main, cleanup) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      log(`\n${sig}: cleaning up`)
      cleanup()
      process.exit(130)
    })
  }
  let failed = false
  try {
    await main()
  } catch (e) {
    failed = true
    console.error('\nBENCHMARK FAILED:', e?.stack ?? e)
  } finally {
    cleanup()
  }
  if (failed) process.exit(1)
}

/** A free TCP port on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Starts Debian's docker-registry on 127.0.0.1 with its data in `dir`; `{ addr, child }`. */
export async function startRegistry(dir) {
  const port = await freePort()
  const addr = `127.0.0.1:${port}`
  const config = path.join(dir, 'config.yml')
  fs.writeFileSync(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: ${addr}\n`)
  const child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' })
  for (let i = 0; ; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
      s.on('error', () => resolve(false))
    })
    if (up) break
    if (i > 400) throw new Error('the registry did not start')
    await new Promise((r) => setTimeout(r, 50))
  }
  return { addr, child }
}

