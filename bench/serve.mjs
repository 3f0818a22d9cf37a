// The HTTP server under load, on loopback only, bounded in time:
//
// 1. GET /v1/images on a cache of 10,000 references (bench/synth.mjs),
//    requests per second with wrk, beside the same list called in-process
//    (Image.listLocal) for the cost of HTTP and JSON;
// 2. blob throughput of /v2 against Debian's docker-registry serving the
//    same image (one 256 MiB gzip layer of random bytes), side by side: wrk with the
//    same connections on each, in rounds whose order swaps, with each server's
//    CPU time per GiB sent.
//
//   node bench/serve.mjs            (needs wrk, skopeo, docker-registry; apt-get install wrk)
//   BENCH_ONLY=blob node bench/serve.mjs   (the blob load alone)
//
// Prints a table and the ratios; writes bench/serve-results.json.
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { log, machine, runBenchmark, tarHeader, writeLayout, MiB } from './lib.mjs'
import { synthesize } from './synth.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { Image, LocalBackend, serve } = createRequire(import.meta.url)(path.join(ROOT, 'index.js'))
const TOKEN = 'bench-token-0123456789abcdef'
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10)
// The blob loads run in ROUNDS rounds of BLOB_SECONDS each per server, the
// order swapped every round; the ratio is the median of the rounds'.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const BLOB_SECONDS = Number(process.env.BENCH_BLOB_SECONDS ?? 5)
// BENCH_ONLY=blob skips the /v1/images load.
const ONLY = process.env.BENCH_ONLY
const LAYER_MIB = Number(process.env.BENCH_LAYER_MIB ?? 256)
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-bench-serve-'))
const children = []

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** This process's CPU time so far, in seconds. */
function ownCpu() {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/** A child's CPU time so far (utime + stime of /proc/PID/stat), in seconds. */
function childCpu(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** wrk's requests/s and bytes/s for one URL. */
function wrk(url, { connections, headers = [], seconds = SECONDS }) {
  const args = ['-t', '2', '-c', String(connections), '-d', `${seconds}s`, '--latency']
  for (const h of headers) args.push('-H', h)
  args.push(url)
  const r = spawnSync('wrk', args, { encoding: 'utf8' })
  if (r.error || r.status !== 0) throw new Error(`wrk is required (apt-get install wrk): ${r.error ?? r.stderr}`)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)[1])
  const [, n, unit] = /Transfer\/sec:\s+([\d.]+)(\w+)/.exec(r.stdout)
  const scale = { B: 1, KB: 1024, MB: MiB, GB: 1024 * MiB }[unit]
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)
  if (errors) throw new Error(`wrk saw ${errors[1]} failed answers from ${url}`)
  const p50 = /50%\s+([\d.]+\w+)/.exec(r.stdout)?.[1]
  return { rps, bytesPerSecond: Number(n) * scale, p50, raw: r.stdout }
}

/**
 * A layout of one image whose single gzip layer holds `mib` MiB of random
 * bytes (gzip, so that skopeo pushes it as it is and both servers hold the
 * same blob).
 */
function bigLayout(dir, mib) {
  const blobs = path.join(dir, 'blobs', 'sha256')
  fs.mkdirSync(blobs, { recursive: true })
  const size = mib * MiB
  const tar = [tarHeader('data.bin', size, 0o644, '0')]
  for (let left = size; left > 0; left -= 4 * MiB) tar.push(crypto.randomBytes(Math.min(left, 4 * MiB)))
  tar.push(Buffer.alloc(1024))
  const raw = Buffer.concat(tar)
  const diffId = `sha256:${crypto.createHash('sha256').update(raw).digest('hex')}`
  const gz = gzipSync(raw, { level: 1 })
  const hex = crypto.createHash('sha256').update(gz).digest('hex')
  fs.writeFileSync(path.join(blobs, hex), gz)
  const digest = `sha256:${hex}`
  writeLayout(dir, [{ digest, size: gz.length, diffId }], 'application/vnd.oci.image.layer.v1.tar+gzip')
  return { digest, bytes: gz.length }
}

async function waitFor(port) {
  for (let i = 0; i < 400; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s.destroy() || true))
      s.on('error', () => resolve(false))
    })
    if (up) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listens on ${port}`)
}

async function main() {
  const auth = `Authorization: Bearer ${TOKEN}`
  log('building a cache of 10,000 references ...')
  let list = { rps: NaN, p50: null }
  let inProcess = NaN
  let count = 0
  let body = ''
  if (ONLY !== 'blob') {
    const listHome = path.join(work, 'list-home')
    synthesize(listHome)
    const listBackend = new LocalBackend({ home: listHome })
    count = (await Image.listLocal(listBackend)).length
    const listPort = await freePort()
    const listServer = await serve({ home: listHome, listen: `127.0.0.1:${listPort}`, token: TOKEN })
    const listUrl = `http://127.0.0.1:${listPort}/v1/images`
    body = await (await fetch(listUrl, { headers: { Authorization: `Bearer ${TOKEN}` } })).text()
    if (JSON.parse(body).length !== count) throw new Error('GET /v1/images does not list every reference')
    log(`GET /v1/images (${count} references, ${(body.length / MiB).toFixed(2)} MiB of JSON) for ${SECONDS} s ...`)
    list = wrk(listUrl, { connections: 8, headers: [auth] })
    let calls = 0
    const t0 = process.hrtime.bigint()
    while (Number(process.hrtime.bigint() - t0) / 1e9 < SECONDS) {
      await Promise.all(Array.from({ length: 8 }, () => Image.listLocal(listBackend)))
      calls += 8
  }
  inProcess = calls / (Number(process.hrtime.bigint() - t0) / 1e9)
  await listServer.close()
  }

  log(`building a ${LAYER_MIB} MiB image, pushing it to docker-registry, loading it ...`)
  const layout = path.join(work, 'big')
  const big = bigLayout(layout, LAYER_MIB)
  const regPort = await freePort()
  const regDir = path.join(work, 'registry')
  fs.mkdirSync(regDir)
  const config = path.join(regDir, 'config.yml')
  fs.writeFileSync(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${regDir}/data\nhttp:\n  addr: 127.0.0.1:${regPort}\n`)
  const registry = spawn('docker-registry', ['serve', config], { stdio: 'ignore' })
  children.push(registry)
  await waitFor(regPort)
  const push = spawnSync('skopeo', ['copy', '--insecure-policy', '--dest-tls-verify=false', `oci:${layout}:big`, `docker://127.0.0.1:${regPort}/bench/big:1`], { encoding: 'utf8' })
  if (push.status !== 0) throw new Error(`skopeo: ${push.stderr}`)
  const blobHome = path.join(work, 'blob-home')
  const blobBackend = new LocalBackend({ home: blobHome })
  await Image.loadLocal(blobBackend, layout, { reference: 'bench/big:1' })
  const blobPort = await freePort()
  const blobServer = await serve({ home: blobHome, listen: `127.0.0.1:${blobPort}`, token: TOKEN })
  const ours = `http://127.0.0.1:${blobPort}/v2/bench/big/blobs/${big.digest}`
  const theirs = `http://127.0.0.1:${regPort}/v2/bench/big/blobs/${big.digest}`
  // The first whole GET of a blob hashes it and, once the blob is 2 s old
  // (see microsandbox::blob_seal), seals it; this check GET is that one.
  await new Promise((resolve) => setTimeout(resolve, 2500))
  for (const url of [ours, theirs]) {
    const r = spawnSync('curl', ['-sS', '-H', auth, '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], { encoding: 'utf8' })
    if (r.stdout !== `200 ${big.bytes}`) throw new Error(`${url}: ${r.stdout} ${r.stderr}`)
  }
  log(`/v2 blob of ${LAYER_MIB} MiB, ${ROUNDS} rounds of ${BLOB_SECONDS} s each, 4 connections, order swapped each round ...`)
  const rounds = []
  for (let i = 0; i < ROUNDS; i++) {
    const pair = {}
    const cpu = {}
    for (const side of i % 2 ? ['theirs', 'ours'] : ['ours', 'theirs']) {
      // The server's CPU time per GiB sent: ours runs in this process,
      // the registry in its own.
      const before = side === 'ours' ? ownCpu() : childCpu(registry.pid)
      pair[side] = side === 'ours'
        ? wrk(ours, { connections: 4, headers: [auth], seconds: BLOB_SECONDS })
        : wrk(theirs, { connections: 4, seconds: BLOB_SECONDS })
      const spent = (side === 'ours' ? ownCpu() : childCpu(registry.pid)) - before
      cpu[side] = spent / ((pair[side].bytesPerSecond * BLOB_SECONDS) / 1024 / MiB)
    }
    rounds.push({
      ours: pair.ours.bytesPerSecond,
      theirs: pair.theirs.bytesPerSecond,
      ratio: pair.ours.bytesPerSecond / pair.theirs.bytesPerSecond,
      oursCpuPerGiB: cpu.ours,
      theirsCpuPerGiB: cpu.theirs,
    })
    log(`  round ${i + 1}: ours ${(pair.ours.bytesPerSecond / 1024 / MiB).toFixed(2)} GiB/s (${cpu.ours.toFixed(3)} CPU s/GiB), docker-registry ${(pair.theirs.bytesPerSecond / 1024 / MiB).toFixed(2)} GiB/s (${cpu.theirs.toFixed(3)} CPU s/GiB)`)
  }
  const mid = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const served = { bytesPerSecond: mid(rounds.map((r) => r.ours)) }
  const reference = { bytesPerSecond: mid(rounds.map((r) => r.theirs)) }
  const ratio = mid(rounds.map((r) => r.ratio))
  const ratioMin = Math.min(...rounds.map((r) => r.ratio))
  const cpuOurs = mid(rounds.map((r) => r.oursCpuPerGiB))
  const cpuTheirs = mid(rounds.map((r) => r.theirsCpuPerGiB))
  await blobServer.close()

  const results = {
    machine: machine(),
    seconds: SECONDS,
    list: { references: count, jsonBytes: body.length, httpRps: list.rps, p50: list.p50, inProcessCallsPerSecond: inProcess },
    blob: {
      bytes: big.bytes,
      oursBytesPerSecond: served.bytesPerSecond,
      registryBytesPerSecond: reference.bytesPerSecond,
      rounds,
      ratio,
      ratioMin,
      oursCpuPerGiB: cpuOurs,
      registryCpuPerGiB: cpuTheirs,
    },
  }
  fs.writeFileSync(path.join(ROOT, 'bench', 'serve-results.json'), JSON.stringify(results, null, 2))
  const gib = (b) => (b / 1024 / MiB).toFixed(2) + ' GiB/s'
  console.log(`
| measure | microsandbox serve | reference | ratio |
| --- | --- | --- | --- |
| GET /v1/images, ${count} references (req/s, 8 connections) | ${list.rps.toFixed(1)} | Image.listLocal in-process: ${inProcess.toFixed(1)} calls/s | ${(list.rps / inProcess).toFixed(2)} |
| /v2 blob GET, ${LAYER_MIB} MiB (4 connections; medians of ${ROUNDS} rounds) | ${gib(served.bytesPerSecond)} | docker-registry: ${gib(reference.bytesPerSecond)} | ${ratio.toFixed(2)} (min ${ratioMin.toFixed(2)}) |
| server CPU per GiB sent (same rounds, medians) | ${cpuOurs.toFixed(3)} s | docker-registry: ${cpuTheirs.toFixed(3)} s | ${(cpuTheirs / cpuOurs).toFixed(2)} |
`)
}

function cleanup() {
  for (const c of children) c.kill()
  fs.rmSync(work, { recursive: true, force: true })
}

runBenchmark(main, cleanup)
