// Helpers shared by the benchmarks: timing, statistics, the machine's
// description, tar headers, and running commands under /usr/bin/time.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
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
