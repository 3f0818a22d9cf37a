// The cold-start benchmark: `node bench/coldstart.mjs` (after `npm run build`).
//
// From an empty cache to the first line an image prints inside a microVM,
// for a ~100 MiB and a ~1 GiB image (gzip blobs as the registry serves
// them), pulled from Debian's docker-registry on 127.0.0.1:
//
//   ours    Image.pullLocal(ref, { materialize: true }) into an empty home
//           (in this process), Image.materializeLocal (the disk, already
//           made, checked and handed out) and Image.inspectLocal (the run
//           spec), then qemu boots the VMDK as its one disk
//   anchor  `skopeo copy docker://... oci:DIR:img`, `umoci unpack`,
//           `mkfs.erofs img.erofs bundle/rootfs` (the run spec from umoci's
//           config.json), then the same qemu boots the raw EROFS image
//
// Each path runs twice: sequential (qemu starts when the disk is made) and
// overlapped (qemu starts with no disk at the same time as the pull; the
// disk is hot-plugged over QMP, blockdev-add + device_add virtio-blk-pci,
// when it is made). Both paths use the same kernel (Debian's 6.12 from
// scripts/guest-kernels.sh), the same initramfs (bench/coldstart/init.sh,
// busybox-static, bench/coldstart/agent.c, the kernel's own modules) and
// the same qemu command line. The guest receives the run spec on its
// console once the disk is made. Times are performance.now() in this
// process as qemu's serial lines arrive, from the start of each run.
//
// Repetitions interleave the four variants (the order rotating), each in a
// fresh temp dir removed (and `sync`ed, untimed) after it. The sequential
// anchor's `skopeo copy` is the "plain skopeo copy" the goal compares to:
// the image's first line before a plain skopeo copy of it has finished.
// The page cache is not dropped: the registry's blobs are in it for every
// variant alike. Prints a table and writes bench/coldstart-results.json
// (git-ignored). BENCH_QUICK=1: the small image once. REPS_SMALL,
// REPS_LARGE override the repetitions (3 each).

import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { dataEntries, putJson, writeLayer } from './coldstart/layers.mjs'
import { MiB, TIME, log, machine, median, runBenchmark, startRegistry } from './lib.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const TARGET = path.resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target')
const CACHE = path.join(TARGET, 'bench-coldstart')
const QUICK = process.env.BENCH_QUICK === '1'
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip'
const SUITE = 'bookworm-backports'
const CMDLINE = 'console=ttyS0 quiet panic=-1 rdinit=/init'
const MODULES = ['virtio_blk', 'erofs', 'overlay']
const TOOLS = ['qemu-system-x86_64', 'skopeo', 'umoci', 'mkfs.erofs', 'docker-registry', 'busybox', 'gcc', 'xz', 'sync']
const COMMAND_TIMEOUT_MS = 20 * 60 * 1000
const GUEST_TIMEOUT_MS = 5 * 60 * 1000

// Each image: a base layer (busybox-static as /bin/sh) and `dataLayers`
// gzip layers of `layerBytes` of files each (half keystream, half text, so
// gzip halves them); the top one also holds /etc/coldstart-name.
const IMAGES = [
  { name: 'small', dataLayers: 2, layerBytes: 100 * MiB, reps: Number(process.env.REPS_SMALL ?? 3) },
  { name: 'large', dataLayers: 6, layerBytes: 340 * MiB, reps: Number(process.env.REPS_LARGE ?? 3) },
].filter((img) => !QUICK || img.name === 'small')
if (QUICK) IMAGES[0].reps = 1
const VARIANTS = ['ours-seq', 'ours-overlap', 'anchor-seq', 'anchor-overlap']
const readyLine = (img) => `coldstart-ready ${img.name}`
const s = (ms) => (ms / 1000).toFixed(2) + ' s'

const { Image, LocalBackend } = createRequire(import.meta.url)(path.join(ROOT, 'index.js'))

// ---- tools and processes ----------------------------------------------------

function which(tool) {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir, tool)
    if (fs.existsSync(p)) return p
  }
  return null
}

/** Fails with a clear message when a tool is missing or busybox is dynamic. */
function checkTools() {
  const missing = TOOLS.filter((t) => !which(t))
  if (missing.length) throw new Error(`missing tools: ${missing.join(', ')} (apt-get install qemu-system-x86 skopeo umoci erofs-utils docker-registry busybox-static gcc xz-utils)`)
  const head = fs.readFileSync(which('busybox')).subarray(0, 8192)
  if (head.includes('/lib64/ld')) throw new Error(`${which('busybox')} is dynamic: install busybox-static`)
}

/** Runs a command to completion (stdout returned); throws with its stderr. */
function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, timeout: COMMAND_TIMEOUT_MS, ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`)
  return r.stdout
}

const children = new Set()

/**
 * Runs a command without blocking the event loop (under /usr/bin/time when
 * there is one, its report in `timeFile`); resolves with `{ out, cpuMs }`
 * (user + system CPU time, null without /usr/bin/time).
 */
function exec(cmd, args, { env = {}, timeFile }) {
  const argv = TIME ? [TIME, '-o', timeFile, '-f', '%U %S', cmd, ...args] : [cmd, ...args]
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    children.add(child)
    let out = ''
    let err = ''
    child.stdout.on('data', (b) => (out += b))
    child.stderr.on('data', (b) => (err += b))
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${err}`))
      const cpu = TIME ? fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number) : null
      resolve({ out, cpuMs: cpu ? (cpu[0] + cpu[1]) * 1000 : null })
    })
  })
}

// ---- the guest: kernel, modules, initramfs ------------------------------------

/** Debian's 6.12 kernel, fetched by scripts/guest-kernels.sh when missing. */
function guestKernel() {
  const dir = path.join(TARGET, 'guest-kernels', SUITE)
  if (!fs.existsSync(path.join(dir, 'ready'))) {
    log(`fetching the ${SUITE} kernel with scripts/guest-kernels.sh`)
    sh('bash', [path.join(ROOT, 'scripts/guest-kernels.sh'), SUITE], { env: { ...process.env, CARGO_TARGET_DIR: TARGET }, stdio: ['ignore', 'pipe', 'inherit'] })
  }
  const release = fs.readFileSync(path.join(dir, 'release'), 'utf8').trim()
  return {
    release,
    vmlinuz: path.join(dir, 'root', 'boot', `vmlinuz-${release}`),
    modules: path.join(dir, 'root', 'lib', 'modules', release),
  }
}

/**
 * The modules `names` need, each after its hard (modules.dep) and soft
 * (modules.softdep `pre:`, through modules.alias) dependencies, built-in
 * ones left out: `[{ name, bytes }]`, decompressed.
 */
function moduleOrder(dir, names) {
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n')
  const nameOf = (p) => path.basename(p).split('.ko')[0].replaceAll('-', '_')
  const deps = new Map()
  for (const line of read('modules.dep')) {
    const [p, rest] = line.split(':')
    if (rest !== undefined) deps.set(nameOf(p), { path: p, deps: rest.split(/\s+/).filter(Boolean).map(nameOf) })
  }
  const builtin = new Set(read('modules.builtin').filter(Boolean).map(nameOf))
  const aliases = new Map()
  for (const w of read('modules.alias').map((l) => l.split(/\s+/))) {
    if (w[0] === 'alias' && w.length === 3) aliases.set(w[1], [...(aliases.get(w[1]) ?? []), w[2]])
  }
  const soft = new Map()
  for (const w of read('modules.softdep').map((l) => l.split(/\s+/))) {
    if (w[0] !== 'softdep') continue
    const pre = w.indexOf('pre:')
    if (pre > 0) soft.set(w[1].replaceAll('-', '_'), w.slice(pre + 1).filter((x) => !x.endsWith(':')))
  }
  const resolve = (n) => (deps.has(n) || builtin.has(n) ? [n] : aliases.get(n) ?? [])
  const order = []
  const add = (n) => {
    if (builtin.has(n) || order.includes(n)) return
    if (!deps.has(n)) throw new Error(`module ${n}: not in ${dir}/modules.dep`)
    for (const s of soft.get(n) ?? []) resolve(s).forEach(add)
    deps.get(n).deps.forEach(add)
    order.push(n)
  }
  for (const n of names) {
    const r = resolve(n)
    if (!r.length) throw new Error(`module ${n}: not in ${dir}`)
    r.forEach(add)
  }
  return order.map((name) => {
    const file = path.join(dir, deps.get(name).path)
    const bytes = file.endsWith('.ko') ? fs.readFileSync(file) : spawnSync(file.endsWith('.xz') ? 'xz' : 'zstd', ['-dc', file], { maxBuffer: 64 * MiB }).stdout
    if (!bytes?.subarray(0, 4).equals(Buffer.from('\x7fELF', 'latin1'))) throw new Error(`${file}: not an ELF module after decompression`)
    return { name, bytes }
  })
}

/** A cpio archive in the kernel's initramfs format (newc). */
function cpio(entries) {
  const parts = []
  let ino = 0
  const pad = (n) => Buffer.alloc((4 - (n % 4)) % 4)
  const entry = (name, mode, data = Buffer.alloc(0), rdev = [0, 0]) => {
    const fields = [++ino, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length + 1, 0]
    const head = Buffer.from('070701' + fields.map((v) => v.toString(16).padStart(8, '0')).join('') + name + '\0', 'latin1')
    parts.push(head, pad(head.length), data, pad(data.length))
  }
  for (const e of entries) entry(e.name, e.mode, e.data, e.rdev)
  entry('TRAILER!!!', 0)
  return Buffer.concat(parts)
}

/** bench/coldstart/agent.c built with gcc -static, kept per source hash. */
function agentBinary() {
  const src = path.join(HERE, 'coldstart', 'agent.c')
  const tag = crypto.createHash('sha256').update(fs.readFileSync(src)).digest('hex').slice(0, 16)
  const bin = path.join(CACHE, `agent-${tag}`)
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(CACHE, { recursive: true })
    sh('gcc', ['-static', '-O2', '-o', `${bin}.tmp`, src])
    fs.renameSync(`${bin}.tmp`, bin)
  }
  return bin
}

/** The initramfs every boot uses; returns its path and the module names. */
function writeInitramfs(kernel, file) {
  const mods = moduleOrder(kernel.modules, MODULES)
  const entries = [
    ...['bin', 'dev', 'lib', 'lib/modules', 'proc', 'sys'].map((name) => ({ name, mode: 0o040755 })),
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'bin/busybox', mode: 0o100755, data: fs.readFileSync(which('busybox')) },
    { name: 'bin/agent', mode: 0o100755, data: fs.readFileSync(agentBinary()) },
    { name: 'init', mode: 0o100755, data: fs.readFileSync(path.join(HERE, 'coldstart', 'init.sh')) },
    { name: 'modules.order', mode: 0o100644, data: Buffer.from(mods.map((m) => m.name + '\n').join('')) },
    ...mods.map((m) => ({ name: `lib/modules/${m.name}.ko`, mode: 0o100644, data: m.bytes })),
  ]
  fs.writeFileSync(file, cpio(entries))
  return mods.map((m) => m.name)
}

// ---- the guest: qemu ----------------------------------------------------------

/** The marks /init prints, in order, each timestamped as its line arrives. */
const MARKS = { init: 'coldstart: init', waiting: 'coldstart: waiting', spec: 'coldstart: spec', disk: 'coldstart: disk', mounted: 'coldstart: mounted' }

/**
 * One qemu under TCG, its serial console on stdio. `disk` (`{ path,
 * format }`) is attached at start; without it, `hotplug` attaches one
 * later over QMP. `at[line]` is when each console line first arrived.
 */
class Guest {
  constructor({ kernel, initrd, work, disk, t0 }) {
    this.t0 = t0
    this.lines = []
    this.waiters = []
    this.exited = null
    this.qmpPath = path.join(work, 'qmp.sock')
    const args = ['-accel', 'tcg', '-cpu', 'max', '-m', '768', '-smp', '1', '-nodefaults', '-no-reboot', '-display', 'none',
      '-kernel', kernel.vmlinuz, '-initrd', initrd, '-append', CMDLINE, '-serial', 'stdio',
      '-qmp', `unix:${this.qmpPath},server=on,wait=off`]
    if (disk) args.push('-drive', driveArg(disk))
    this.command = `qemu-system-x86_64 ${args.join(' ')}`
    this.spawnedAt = performance.now() - t0
    this.child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] })
    children.add(this.child)
    let partial = ''
    this.stderr = ''
    this.child.stdout.on('data', (b) => {
      const t = performance.now() - this.t0
      const parts = (partial + b.toString('latin1')).split('\n')
      partial = parts.pop()
      for (const p of parts) this.onLine(p.replace(/\r/g, ''), t)
    })
    this.child.stderr.on('data', (b) => (this.stderr += b))
    this.child.stdin.on('error', () => {})
    this.child.on('close', (code, signal) => {
      children.delete(this.child)
      this.exited = `exit ${code ?? signal}`
      if (partial) this.onLine(partial, performance.now() - this.t0)
      for (const w of this.waiters) w.reject(this.failure(`qemu ended (${this.exited}) before "${w.line}"`))
      this.waiters = []
    })
  }

  onLine(text, t) {
    this.lines.push({ text, t })
    if (text.startsWith('coldstart: failed') || text.startsWith('agent:') || text.includes('Kernel panic')) {
      for (const w of this.waiters) w.reject(this.failure(`the guest failed: ${text}`))
      this.waiters = []
      return
    }
    this.waiters = this.waiters.filter((w) => (text === w.line ? (w.resolve(t), false) : true))
  }

  /** An Error with qemu's command line and everything the guest printed. */
  failure(msg) {
    const logText = this.lines.map((l) => `[${(l.t / 1000).toFixed(2)}] ${l.text}`).join('\n')
    return new Error(`${msg}\n--- ${this.command}\n--- console (kernel log and init):\n${logText}\n--- qemu stderr:\n${this.stderr}--- end`)
  }

  /** When `line` arrived (ms since t0), waiting at most `timeoutMs`. */
  waitFor(line, timeoutMs = GUEST_TIMEOUT_MS) {
    const seen = this.lines.find((l) => l.text === line)
    if (seen) return Promise.resolve(seen.t)
    if (this.exited) return Promise.reject(this.failure(`qemu ended (${this.exited}) before "${line}"`))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.failure(`the guest did not print "${line}" within ${timeoutMs / 1000} s`)), timeoutMs)
      this.waiters.push({ line, resolve: (t) => (clearTimeout(timer), resolve(t)), reject: (e) => (clearTimeout(timer), reject(e)) })
    })
  }

  /** Sends the run spec (lines up to `end`) once /init asks for it. */
  async sendSpec(spec) {
    await this.waitFor(MARKS.waiting)
    this.child.stdin.write(spec + 'end\n')
  }

  /** Attaches `disk` as a hot-plugged read-only virtio-blk-pci device. */
  async hotplug(disk) {
    const qmp = await Qmp.connect(this.qmpPath)
    try {
      const node = { driver: disk.format, 'node-name': 'disk0', 'read-only': true, file: { driver: 'file', filename: disk.path } }
      await qmp.execute('blockdev-add', node)
      await qmp.execute('device_add', { driver: 'virtio-blk-pci', drive: 'disk0', id: 'vd0' })
    } finally {
      qmp.close()
    }
  }

  stop() {
    if (this.exited) return Promise.resolve()
    return new Promise((resolve) => {
      this.child.once('close', resolve)
      this.child.kill('SIGKILL')
    })
  }
}

function driveArg(disk) {
  if (disk.path.includes(',')) throw new Error(`${disk.path}: a comma in a -drive path`)
  return `file=${disk.path},format=${disk.format},if=virtio,readonly=on`
}

/** A minimal QMP client: one command at a time, events ignored. */
class Qmp {
  static async connect(sock, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        const q = new Qmp(await new Promise((resolve, reject) => {
          const s = net.connect(sock, () => resolve(s))
          s.once('error', reject)
        }))
        await q.next() // the greeting
        await q.execute('qmp_capabilities')
        return q
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`QMP at ${sock}: ${e.message}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    }
  }

  constructor(socket) {
    this.socket = socket
    this.buf = ''
    this.queue = []
    this.pending = []
    socket.on('data', (b) => {
      this.buf += b
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buf.slice(0, i))
        this.buf = this.buf.slice(i + 1)
        if (msg.event) continue
        const p = this.pending.shift()
        if (p) p(msg)
        else this.queue.push(msg)
      }
    })
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift())
    return new Promise((resolve) => this.pending.push(resolve))
  }

  async execute(command, args) {
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n')
    const reply = await this.next()
    if (reply.error) throw new Error(`QMP ${command}: ${reply.error.desc}`)
    return reply.return
  }

  close() {
    this.socket.destroy()
  }
}

// ---- the images ---------------------------------------------------------------

/** The OCI layout of `img` (tag `img`), built once under the bench cache. */
async function buildImage(img) {
  const dir = path.join(CACHE, 'images', `${img.name}-v1`)
  const done = path.join(dir, 'done.json')
  if (fs.existsSync(done)) return { dir, ...JSON.parse(fs.readFileSync(done, 'utf8')) }
  fs.rmSync(dir, { recursive: true, force: true })
  const blobs = path.join(dir, 'blobs', 'sha256')
  fs.mkdirSync(blobs, { recursive: true })
  const t = performance.now()
  const base = [{ name: 'bin/' }, { name: 'etc/' }, { name: 'bin/sh', mode: 0o755, data: fs.readFileSync(which('busybox')) }]
  const plans = [base]
  for (let k = 0; k < img.dataLayers; k++) plans.push(dataEntries(img, k))
  plans.at(-1).push({ name: 'etc/' }, { name: 'etc/coldstart-name', data: Buffer.from(`${img.name}\n`) })
  // Two layers at a time: gzip runs on the thread pool.
  const layers = new Array(plans.length)
  let nextPlan = 0
  const worker = async () => {
    for (let i; (i = nextPlan++) < plans.length; ) {
      const tmp = path.join(dir, `layer-${i}.tmp`)
      layers[i] = await writeLayer(tmp, plans[i])
      fs.renameSync(tmp, path.join(blobs, layers[i].digest.slice(7)))
      log(`  ${img.name}: layer ${i + 1}/${plans.length}, ${(layers[i].size / MiB).toFixed(0)} MiB`)
    }
  }
  await Promise.all([worker(), worker()])
  const created = '2026-01-01T00:00:00Z'
  const config = putJson(blobs, {
    created,
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Entrypoint: ['/bin/sh', '-c'], Cmd: [`read n </etc/coldstart-name; echo "coldstart-ready $n"`], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created, created_by: `coldstart layer ${i}` })),
  })
  const manifest = putJson(blobs, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: GZ, digest: l.digest, size: l.size })),
  })
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'img' } }],
  }))
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  const fileBytes = plans.flat().reduce((a, e) => a + (e.size ?? e.data?.length ?? 0), 0)
  const summary = { manifest: manifest.digest, layers: layers.length, blobBytes: layers.reduce((a, l) => a + l.size, 0), fileBytes }
  fs.writeFileSync(done, JSON.stringify(summary))
  log(`  ${img.name}: built in ${((performance.now() - t) / 1000).toFixed(0)} s`)
  return { dir, ...summary }
}

// ---- the two paths ------------------------------------------------------------

/** The agent's spec lines (bench/coldstart/agent.c) of a run. */
function specText({ uid, gid, cwd, args, env }) {
  const lines = [...(uid === undefined ? [] : [`uid=${uid}`, `gid=${gid}`]), `cwd=${cwd || '/'}`, ...args.map((a) => `arg=${a}`), ...env.map((e) => `env=${e}`)]
  for (const l of lines) if (l.includes('\n')) throw new Error(`a newline in the run spec: ${l}`)
  return lines.join('\n') + '\n'
}

/** The run spec of an image config as the library reports it. */
function specOfConfig(c) {
  let uid, gid
  if (c.user) {
    const [u, g = u] = c.user.split(':')
    if (!/^\d+$/.test(u) || !/^\d+$/.test(g)) throw new Error(`user ${c.user}: only numeric users are run here`)
    ;[uid, gid] = [u, g]
  }
  return specText({ uid, gid, cwd: c.workingDir, args: [...(c.entrypoint ?? []), ...(c.cmd ?? [])], env: c.env })
}

/** The run spec umoci wrote into the bundle's runtime config. */
function specOfBundle(bundle) {
  const p = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')).process
  return specText({ uid: p.user.uid, gid: p.user.gid, cwd: p.cwd, args: p.args, env: p.env })
}

/** Ours: pull with materialize, the disk, the config. Steps in `steps`. */
async function prepareOurs(ctx, steps) {
  const backend = new LocalBackend({ home: path.join(ctx.work, 'home') })
  const step = stepper(ctx, steps)
  const handle = await step('pull+materialize', () => Image.pullLocal(backend, ctx.ref, { insecure: true, materialize: true }))
  if (handle.manifestDigest !== ctx.image.manifest) throw new Error(`pulled ${handle.manifestDigest}, pushed ${ctx.image.manifest}`)
  const disk = await step('disk', () => Image.materializeLocal(backend, ctx.ref))
  const detail = await step('inspect', () => Image.inspectLocal(backend, ctx.ref))
  return { disk: { path: disk.vmdkPath, format: 'vmdk' }, spec: specOfConfig(detail.config) }
}

/** The anchor: skopeo copy, umoci unpack, mkfs.erofs. Steps in `steps`. */
async function prepareAnchor(ctx, steps) {
  const step = stepper(ctx, steps)
  const layout = path.join(ctx.work, 'oci')
  const bundle = path.join(ctx.work, 'bundle')
  const erofs = path.join(ctx.work, 'image.erofs')
  const opts = { env: { TMPDIR: ctx.work }, timeFile: path.join(ctx.work, 'time.out') }
  await step('skopeo copy', () => exec('skopeo', ['copy', '-q', '--insecure-policy', '--src-tls-verify=false', `docker://${ctx.ref}`, `oci:${layout}:img`], opts))
  await step('umoci unpack', () => exec('umoci', ['unpack', '--image', `${layout}:img`, bundle], opts))
  await step('mkfs.erofs', () => exec('mkfs.erofs', [erofs, path.join(bundle, 'rootfs')], opts))
  return { disk: { path: erofs, format: 'raw' }, spec: specOfBundle(bundle) }
}

/**
 * Times each step of a preparation: its length, its end (ms since t0) and
 * its CPU time (a command's from /usr/bin/time, else this process's, which
 * counts the addon's threads).
 */
function stepper(ctx, steps) {
  return async (name, fn) => {
    const start = performance.now()
    const cpu0 = process.cpuUsage()
    const v = await fn()
    const end = performance.now()
    const cpu = process.cpuUsage(cpu0)
    steps.push({ name, ms: end - start, at: end - ctx.t0, cpuMs: v?.cpuMs !== undefined ? v.cpuMs : (cpu.user + cpu.system) / 1000 })
    return v
  }
}

/**
 * One run of a path, sequential or overlapped: from t0 to the image's
 * first line on the guest's console. Returns every mark (ms since t0).
 */
async function coldStart(ctx, prepare, overlap) {
  ctx.t0 = performance.now()
  const steps = []
  let guest = overlap ? new Guest({ ...ctx, t0: ctx.t0 }) : null
  try {
    const { disk, spec } = await prepare(ctx, steps)
    const ready = performance.now() - ctx.t0
    if (overlap) await guest.hotplug(disk)
    else guest = new Guest({ ...ctx, disk, t0: ctx.t0 })
    const attached = performance.now() - ctx.t0
    await guest.sendSpec(spec)
    const first = await guest.waitFor(readyLine(ctx.img))
    const at = Object.fromEntries(Object.entries(MARKS).map(([k, line]) => [k, guest.lines.find((l) => l.text === line).t]))
    const firstByte = guest.lines[0].t
    return { steps, ready, spawned: guest.spawnedAt, attached, firstByte, ...at, first }
  } finally {
    await guest?.stop()
  }
}

// ---- the run ------------------------------------------------------------------

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-coldstart-'))
let registry = null
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL')
  registry?.child.kill()
  fs.rmSync(work, { recursive: true, force: true })
}
await runBenchmark(main, cleanup)
process.exit(0)

async function main() {
  checkTools()
  const kernel = guestKernel()
  const initrd = path.join(work, 'initrd.cpio')
  const modules = writeInitramfs(kernel, initrd)
  log(`guest: ${kernel.release}, modules ${modules.join(' ')}, initramfs ${(fs.statSync(initrd).size / MiB).toFixed(1)} MiB`)
  log('images (built once, kept in the bench cache):')
  const images = []
  for (const img of IMAGES) images.push({ img, image: await buildImage(img) })
  fs.mkdirSync(path.join(CACHE, 'registry'), { recursive: true })
  registry = await startRegistry(path.join(CACHE, 'registry'))
  for (const { img, image } of images) {
    sh('skopeo', ['copy', '-q', '--insecure-policy', '--dest-tls-verify=false', `oci:${image.dir}:img`, `docker://${registry.addr}/coldstart-${img.name}:1`])
    log(`  ${img.name}: ${(image.blobBytes / MiB).toFixed(0)} MiB of blobs in ${image.layers} layers, ${(image.fileBytes / MiB).toFixed(0)} MiB of files, pushed to ${registry.addr}`)
  }
  sh('sync', [])
  const rssBefore = process.resourceUsage().maxRSS
  const results = {
    date: new Date().toISOString(),
    machine: { ...machine(), qemu: sh('qemu-system-x86_64', ['--version']).split('\n')[0], skopeo: sh('skopeo', ['--version']).trim(), umoci: sh('umoci', ['--version']).trim(), mkfsErofs: spawnSync('mkfs.erofs', ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n')[0] },
    guest: { kernel: kernel.release, cmdline: CMDLINE, modules },
    images: {},
  }
  for (const { img, image } of images) {
    const runs = Object.fromEntries(VARIANTS.map((v) => [v, []]))
    for (let rep = 0; rep < img.reps; rep++) {
      for (let k = 0; k < VARIANTS.length; k++) {
        const variant = VARIANTS[(rep + k) % VARIANTS.length]
        const dir = fs.mkdtempSync(path.join(work, `${img.name}-${variant}-`))
        const ctx = { img, image, kernel, initrd, work: dir, ref: `${registry.addr}/coldstart-${img.name}:1` }
        const r = await coldStart(ctx, variant.startsWith('ours') ? prepareOurs : prepareAnchor, variant.endsWith('overlap'))
        runs[variant].push(r)
        log(`${img.name} rep ${rep + 1}/${img.reps} ${variant}: first line at ${s(r.first)} (${r.steps.map((st) => `${st.name} ${s(st.ms)}, cpu ${s(st.cpuMs)}`).join('; ')}; init at ${s(r.init)}, mounted at ${s(r.mounted)})`)
        fs.rmSync(dir, { recursive: true, force: true })
        sh('sync', [])
      }
    }
    results.images[img.name] = { blobBytes: image.blobBytes, fileBytes: image.fileBytes, layers: image.layers, reps: img.reps, runs }
  }
  results.peakRssMiB = { beforeRuns: rssBefore / 1024, afterRuns: process.resourceUsage().maxRSS / 1024 }
  report(results)
  fs.writeFileSync(path.join(HERE, 'coldstart-results.json'), JSON.stringify(results, null, 2) + '\n')
  log('\nwrote bench/coldstart-results.json')
}

/** The medians of a variant's runs: each phase's length and the totals. */
function phases(runs) {
  const m = (f) => median(runs.map(f))
  const step = (name, f) => m((r) => f(r.steps.find((st) => st.name === name)))
  return {
    steps: Object.fromEntries(runs[0].steps.map((st) => [st.name, step(st.name, (x) => x.ms)])),
    stepsCpu: Object.fromEntries(runs[0].steps.map((st) => [st.name, step(st.name, (x) => x.cpuMs)])),
    ready: m((r) => r.ready),
    kernel: m((r) => r.init - r.spawned), // qemu spawned -> /init's first line
    modules: m((r) => r.waiting - r.init), // insmod of the modules
    idle: m((r) => r.spec - r.waiting), // /init up, waiting for the host's spec (sent with the disk)
    diskSeen: m((r) => r.disk - Math.max(r.attached, r.spec)), // attached (and spec sent) -> /dev/vda seen
    mount: m((r) => r.mounted - r.disk), // erofs + tmpfs + overlay mounts
    exec: m((r) => r.first - r.mounted), // agent chroot + exec -> the first line
    waitingAt: m((r) => r.waiting),
    first: m((r) => r.first),
    firstMin: Math.min(...runs.map((r) => r.first)),
    firstMax: Math.max(...runs.map((r) => r.first)),
  }
}

function report(results) {
  for (const [name, im] of Object.entries(results.images)) {
    const p = Object.fromEntries(VARIANTS.map((v) => [v, phases(im.runs[v])]))
    const skopeo = median(im.runs['anchor-seq'].map((r) => r.steps.find((st) => st.name === 'skopeo copy').ms))
    im.medians = p
    im.plainSkopeoCopyMs = skopeo
    im.ratios = {
      oursOverlapVsSkopeo: p['ours-overlap'].first / skopeo,
      oursSeqVsSkopeo: p['ours-seq'].first / skopeo,
      anchorSeqVsOursSeq: p['anchor-seq'].first / p['ours-seq'].first,
      anchorOverlapVsOursOverlap: p['anchor-overlap'].first / p['ours-overlap'].first,
    }
    im.goalMet = p['ours-overlap'].first < skopeo
    console.log(`\n${name}: ${(im.blobBytes / MiB).toFixed(0)} MiB of gzip blobs in ${im.layers} layers (${(im.fileBytes / MiB).toFixed(0)} MiB of files), ${im.reps} reps, medians`)
    console.log(`| | ${VARIANTS.join(' | ')} |`)
    console.log(`|---|${VARIANTS.map(() => '---:').join('|')}|`)
    const line = (label, f) => console.log(`| ${label} | ${VARIANTS.map((v) => f(p[v], v)).join(' | ')} |`)
    const stepNames = [...new Set(VARIANTS.flatMap((v) => Object.keys(p[v].steps)))]
    const cpu = (q, st) => (Number.isFinite(q.stepsCpu[st]) ? ` (cpu ${s(q.stepsCpu[st])})` : '')
    for (const st of stepNames) line(st, (q) => (st in q.steps ? s(q.steps[st]) + cpu(q, st) : ''))
    line('disk ready at', (q) => s(q.ready))
    line('qemu spawn -> /init', (q) => s(q.kernel))
    line('modules loaded', (q) => s(q.modules))
    line('/init up and waiting at', (q) => s(q.waitingAt))
    line('/init idle until the disk', (q) => s(q.idle))
    line('disk given -> /dev/vda seen', (q) => s(q.diskSeen))
    line('mount erofs + overlay', (q) => s(q.mount))
    line('exec -> first line', (q) => s(q.exec))
    line('**first line at**', (q) => `**${s(q.first)}** (${s(q.firstMin)}-${s(q.firstMax)})`)
    console.log(`plain skopeo copy: ${s(skopeo)}; ours overlapped / skopeo copy = ${im.ratios.oursOverlapVsSkopeo.toFixed(2)}x, ours sequential / skopeo copy = ${im.ratios.oursSeqVsSkopeo.toFixed(2)}x; anchor / ours: sequential ${im.ratios.anchorSeqVsOursSeq.toFixed(2)}x, overlapped ${im.ratios.anchorOverlapVsOursOverlap.toFixed(2)}x; goal (first line before a plain skopeo copy ends) ${im.goalMet ? 'met' : 'NOT met'}`)
  }
  console.log(`\npeak RSS of this process (the pulls ran in it): ${results.peakRssMiB.afterRuns.toFixed(0)} MiB (${results.peakRssMiB.beforeRuns.toFixed(0)} MiB before the runs)`)
}
