// The VM disk benchmark: `node bench/vm.mjs` (after `npm run build`).
//
// Builds (once, kept in target/bench-vm/) an image of about 1 GiB in four
// gzip layers of real files: a Debian bookworm minbase root from
// debootstrap (the erofs tests' cached target/erofs-tests/debian/
// minbase.tar), this machine's /usr/share, /usr/lib/python3* and
// /usr/lib/gcc, each a GNU tar gzip'ed by `gzip -6`. A second image shares
// the first three layers and has /usr/include on top; a third has only that
// top layer. Then measures side by side, in one run, REPS repetitions each
// (the order rotating; outputs removed, `sync` run, untimed, between):
//
//   ours      Image.materializeLocal of the loaded image (a child node
//             process; peak RSS from /usr/bin/time), its disk removed by a
//             VM-only prune (untimed) before each repetition
//   floor     `gzip -dc` of each layer blob to a file, then `sync` of the
//             files: decompressing the same bytes and having the disk hold
//             them, with no tar parsing or image writing at all
//   umoci     what a user does without us: `umoci unpack` of the image, then
//             `mkfs.erofs -E noinline_data` (erofs-utils 1.5) of its rootfs,
//             then `sync` of the image
//   shared    the second image materialized after the first (only its top
//             layer is new), against the third (that layer alone)
//   pull      `Image.pullLocal` into an empty home, plain and with
//             `materialize: true`, from Debian's docker-registry on 127.0.0.1
//
// Targets: ours <= 1.3x the floor; umoci >= 4x ours; a materializing pull
// <= 1.25x a plain pull; shared ~ the top layer alone; peak RSS < 100 MiB.
// Prints a table and writes bench/vm-results.json (git-ignored). REPS=1 for
// a quick run. `node bench/vm.mjs --child OP HOME REF` is the child mode.
//
// ANCHOR=DIR (another checkout of this repository, built with `npm run
// build`) measures that build too, each measure of ours and the anchor's
// in turn in the same run (each build with a home of its own), and prints
// the ratios of both: a before-and-after pair. The CPU time (user +
// system) of the second image, its layer alone and the pulls is printed
// too: on a machine whose disk is shared it moves less than wall time.

import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MiB, fmtS, fmtX, log, machine, runner, startRegistry, stats, writeLayout } from './lib.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const REPS = Number(process.env.REPS ?? 3)
const TARGET = path.resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target')
const DATA = path.join(TARGET, 'bench-vm')
const ANCHOR = process.env.ANCHOR ? path.resolve(process.env.ANCHOR) : null
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip'

if (process.argv[2] === '--child') {
  const [op, home, ref] = process.argv.slice(3)
  const addon = path.join(process.env.VM_BENCH_ADDON ?? ROOT, 'index.js')
  const { Image, LocalBackend } = createRequire(import.meta.url)(addon)
  const backend = new LocalBackend({ home })
  if (op === 'materialize') await Image.materializeLocal(backend, ref)
  else if (op === 'pull') await Image.pullLocal(backend, ref, { insecure: true, policy: 'always' })
  else if (op === 'pull-materialize') await Image.pullLocal(backend, ref, { insecure: true, policy: 'always', materialize: true })
  else if (op === 'load') await Image.loadLocal(backend, ref)
  else if (op === 'drop-disks') await Image.pruneLocal(backend, { vmOnly: true })
  else throw new Error(`unknown child op ${op}`)
  process.exit(0)
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * MiB, ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status})`)
  return r.stdout
}

function sha256File(file) {
  const h = crypto.createHash('sha256')
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.alloc(4 * MiB)
  for (let n; (n = fs.readSync(fd, buf)) > 0; ) h.update(buf.subarray(0, n))
  fs.closeSync(fd)
  return 'sha256:' + h.digest('hex')
}

function debianTar() {
  const tar = path.join(TARGET, 'erofs-tests', 'debian', 'minbase.tar')
  if (fs.existsSync(tar)) return tar
  const root = path.join(DATA, 'rootfs')
  fs.rmSync(root, { recursive: true, force: true })
  const mirror = process.env.EROFS_TEST_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian'
  log(`== debootstrap --variant=minbase bookworm (${mirror}), once`)
  sh('debootstrap', ['--variant=minbase', 'bookworm', root, mirror])
  fs.mkdirSync(path.dirname(tar), { recursive: true })
  sh('tar', ['--format=posix', '--numeric-owner', '-cf', tar + '.partial', '-C', root, '.'])
  fs.renameSync(tar + '.partial', tar)
  fs.rmSync(root, { recursive: true, force: true })
  return tar
}

/** One gzip layer blob (made once): `{ digest, size, diffId, path }`. */
function layer(name, makeTar) {
  const meta = path.join(DATA, 'layers', `${name}.json`)
  if (fs.existsSync(meta)) return JSON.parse(fs.readFileSync(meta, 'utf8'))
  fs.mkdirSync(path.dirname(meta), { recursive: true })
  const tar = path.join(DATA, 'layers', `${name}.tar`)
  makeTar(tar)
  const diffId = sha256File(tar)
  log(`== gzip -6 ${name} (${(fs.statSync(tar).size / MiB).toFixed(0)} MiB)`)
  sh('gzip', ['-6', '-n', '-f', tar])
  const gz = tar + '.gz'
  const l = { digest: sha256File(gz), size: fs.statSync(gz).size, diffId, path: gz }
  fs.writeFileSync(meta, JSON.stringify(l))
  return l
}

const hostTar = (dirs) => (out) => sh('tar', ['--format=posix', '--numeric-owner', '-cf', out, '-C', '/', ...dirs])

function layouts() {
  const pythons = fs.readdirSync('/usr/lib').filter((d) => d.startsWith('python3')).map((d) => `usr/lib/${d}`)
  const base = [
    layer('debian', (out) => fs.copyFileSync(debianTar(), out)),
    layer('share', hostTar(['usr/share'])),
    layer('python', hostTar(pythons)),
  ]
  const gcc = layer('gcc', hostTar(['usr/lib/gcc']))
  const include = layer('include', hostTar(['usr/include']))
  const make = (name, layers) => {
    const dir = path.join(DATA, name)
    if (fs.existsSync(path.join(dir, 'index.json'))) return { dir, layers }
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true })
    for (const l of layers) fs.linkSync(l.path, path.join(dir, 'blobs', 'sha256', l.digest.slice(7)))
    writeLayout(dir, layers, GZ)
    // writeLayout names its image `big`: each of ours by its own name.
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'))
    index.manifests[0].annotations['org.opencontainers.image.ref.name'] = name
    fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify(index))
    return { dir, layers }
  }
  return { big: make('big', [...base, gcc]), big2: make('big2', [...base, include]), top: make('top', [include]) }
}

const results = { date: new Date().toISOString(), machine: machine(), reps: REPS }
const work = path.join(DATA, 'work')
fs.rmSync(work, { recursive: true, force: true })
fs.mkdirSync(work, { recursive: true })
const { run, syncAll, discard } = runner(work)
// The builds measured: ours, and the anchor's when one is given.
const builds = [{ name: 'ours', root: ROOT }, ...(ANCHOR ? [{ name: 'anchor', root: ANCHOR }] : [])]
for (const b of builds) {
  const r = runner(work, { VM_BENCH_ADDON: b.root })
  b.child = (op, home, ref) => r.run(process.execPath, [fileURLToPath(import.meta.url), '--child', op, home, ref])
  b.home = path.join(work, `home-${b.name}`)
}
const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length])
let registry = null

try {
  results.machine.umoci = sh('umoci', ['--version']).trim()
  results.machine.mkfsErofs = (spawnSync('mkfs.erofs', ['--version'], { encoding: 'utf8' }).stdout || '').split('\n')[0].trim()
  if (ANCHOR) results.anchor = { dir: ANCHOR, commit: spawnSync('git', ['-C', ANCHOR, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).stdout.trim() }
  results.commit = spawnSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).stdout.trim()
  const images = layouts()
  const bytes = (ls) => ls.reduce((a, l) => a + l.size, 0)
  results.image = { layers: images.big.layers.length, compressedBytes: bytes(images.big.layers) }
  log(`image: ${(results.image.compressedBytes / MiB).toFixed(0)} MiB in ${results.image.layers} gzip layers`)

  // Each build's home holds all three images.
  for (const b of builds) for (const name of ['big', 'big2', 'top']) b.child('load', b.home, images[name].dir)
  const tools = {
    floor: () => {
      const out = path.join(work, 'floor')
      fs.mkdirSync(out, { recursive: true })
      const files = images.big.layers.map((l, i) => path.join(out, `l${i}.tar`))
      const script = images.big.layers.map((l, i) => `gzip -dc '${l.path}' > '${files[i]}'`).join(' && ') + ` && sync ${files.map((f) => `'${f}'`).join(' ')}`
      const r = run(script, [], { shell: true })
      discard(out)
      return r
    },
    umoci: () => {
      const bundle = path.join(work, 'bundle')
      const img = path.join(work, 'umoci.erofs')
      const r = run(`umoci unpack --image '${images.big.dir}:big' '${bundle}' >/dev/null && mkfs.erofs -E noinline_data '${img}' '${bundle}/rootfs' >/dev/null && sync '${img}'`, [], { shell: true })
      results.umociImageBytes = fs.statSync(img).size
      discard(bundle)
      discard(img)
      return r
    },
  }
  for (const b of builds) {
    tools[b.name] = () => {
      b.child('drop-disks', b.home, '-')
      syncAll()
      return b.child('materialize', b.home, 'big')
    }
  }
  const samples = Object.fromEntries(Object.keys(tools).map((k) => [k, []]))
  const rss = Object.fromEntries(builds.map((b) => [b.name, []]))
  const order = Object.keys(tools)
  for (let rep = 0; rep < REPS; rep++) {
    for (const name of rotate(order, rep)) {
      syncAll()
      const r = tools[name]()
      samples[name].push(r.ms)
      if (rss[name]) rss[name].push(r.rssKiB)
      log(`rep ${rep + 1} ${name}: ${fmtS(r.ms)}`)
    }
  }
  // Shared layers: big2 after big (only its top layer is new) against top alone.
  const shared = Object.fromEntries(builds.map((b) => [b.name, { big2: [], top: [], cpuBig2: [], cpuTop: [] }]))
  for (let rep = 0; rep < REPS; rep++) {
    for (const b of rotate(builds, rep)) {
      const s = shared[b.name]
      b.child('drop-disks', b.home, '-')
      b.child('materialize', b.home, 'big')
      syncAll()
      const r2 = b.child('materialize', b.home, 'big2')
      s.big2.push(r2.ms)
      s.cpuBig2.push(r2.cpuMs)
      b.child('drop-disks', b.home, '-')
      syncAll()
      const rt = b.child('materialize', b.home, 'top')
      s.top.push(rt.ms)
      s.cpuTop.push(rt.cpuMs)
      log(`rep ${rep + 1} shared ${b.name}: big2 ${fmtS(s.big2.at(-1))}, top ${fmtS(s.top.at(-1))}`)
    }
  }
  const du = JSON.parse(sh(process.execPath, ['-e', `const {Image,LocalBackend}=require(${JSON.stringify(path.join(ROOT, 'index.js'))});Image.diskUsageLocal(new LocalBackend({home:${JSON.stringify(builds[0].home)}})).then(u=>console.log(JSON.stringify(u)))`]))
  results.vmBytesBigAndTop = du.vmBytes

  // Pulls: plain and materializing, each into an empty home.
  fs.mkdirSync(path.join(work, 'registry'))
  registry = await startRegistry(path.join(work, 'registry'))
  sh('skopeo', ['copy', '-q', '--insecure-policy', '--dest-tls-verify=false', `oci:${images.big.dir}:big`, `docker://${registry.addr}/big:1`])
  const ref = `${registry.addr}/big:1`
  const pulls = Object.fromEntries(builds.map((b) => [b.name, { plain: [], materialize: [], rss: [], cpu: { plain: [], materialize: [] } }]))
  const kinds = builds.flatMap((b) => ['plain', 'materialize'].map((kind) => ({ b, kind })))
  for (let rep = 0; rep < REPS; rep++) {
    for (const { b, kind } of rotate(kinds, rep)) {
      const h = path.join(work, `pull-${b.name}-${kind}`)
      syncAll()
      const r = b.child(kind === 'plain' ? 'pull' : 'pull-materialize', h, ref)
      pulls[b.name][kind].push(r.ms)
      pulls[b.name].cpu[kind].push(r.cpuMs)
      if (kind === 'materialize') pulls[b.name].rss.push(r.rssKiB)
      log(`rep ${rep + 1} pull ${b.name} ${kind}: ${fmtS(r.ms)}`)
      discard(h)
    }
  }

  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, stats(v)]))
  results.materialize = s
  results.builds = {}
  for (const b of builds) {
    const own = {
      materialize: s[b.name],
      shared: { big2: stats(shared[b.name].big2), top: stats(shared[b.name].top) },
      pull: { plain: stats(pulls[b.name].plain), materialize: stats(pulls[b.name].materialize) },
      peakRssMiB: { materialize: Math.max(...rss[b.name]) / 1024, pullMaterialize: Math.max(...pulls[b.name].rss) / 1024 },
      // User + system CPU time of the children: steadier than wall time
      // on a machine whose disk is shared.
      cpu: {
        big2: stats(shared[b.name].cpuBig2),
        top: stats(shared[b.name].cpuTop),
        pull: stats(pulls[b.name].cpu.plain),
        pullMaterialize: stats(pulls[b.name].cpu.materialize),
      },
    }
    own.ratios = {
      oursOverFloor: own.materialize.median / s.floor.median,
      umociOverOurs: s.umoci.median / own.materialize.median,
      materializingPullOverPlain: own.pull.materialize.median / own.pull.plain.median,
      sharedOverTopAlone: own.shared.big2.median / own.shared.top.median,
      cpuSharedOverTopAlone: own.cpu.big2.median / own.cpu.top.median,
      cpuMaterializingPullOverPlain: own.cpu.pullMaterialize.median / own.cpu.pull.median,
    }
    results.builds[b.name] = own
  }
  const o = results.builds.ours
  // The fields of a run without an anchor, as before.
  Object.assign(results, { shared: o.shared, pull: o.pull, peakRssMiB: o.peakRssMiB, ratios: o.ratios })
  const mins = (st) => `${fmtS(st.median)} (min ${fmtS(st.min)})`
  const rows = []
  for (const b of builds) {
    const r = results.builds[b.name]
    const tag = builds.length > 1 ? ` [${b.name}]` : ''
    rows.push(
      [`materialize${tag}`, mins(r.materialize), `${fmtX(r.ratios.oursOverFloor)} the floor`, '<= 1.3x'],
      [`umoci unpack + mkfs.erofs`, mins(s.umoci), `${fmtX(r.ratios.umociOverOurs)} ours`, '>= 4x'],
      [`second image, 1 new layer${tag}`, mins(r.shared.big2), `${fmtX(r.ratios.sharedOverTopAlone)} that layer alone`, '<= 1.2x'],
      [`that layer alone${tag}`, mins(r.shared.top), '', ''],
      [`pull${tag}`, mins(r.pull.plain), '', ''],
      [`pull { materialize }${tag}`, mins(r.pull.materialize), `${fmtX(r.ratios.materializingPullOverPlain)} a plain pull`, '<= 1.25x'],
      [`  cpu: second image / layer alone${tag}`, `${fmtS(r.cpu.big2.median)} / ${fmtS(r.cpu.top.median)}`, fmtX(r.ratios.cpuSharedOverTopAlone), ''],
      [`  cpu: pull { materialize } / pull${tag}`, `${fmtS(r.cpu.pullMaterialize.median)} / ${fmtS(r.cpu.pull.median)}`, fmtX(r.ratios.cpuMaterializingPullOverPlain), ''],
      [`peak RSS materialize / pull${tag}`, `${r.peakRssMiB.materialize.toFixed(0)} / ${r.peakRssMiB.pullMaterialize.toFixed(0)} MiB`, '', '< 100 MiB'],
    )
  }
  rows.splice(1, 0, ['floor (gzip -dc + sync)', mins(s.floor), '', ''])
  console.log(rows.map((r) => r.map((c, i) => String(c).padEnd([38, 22, 28, 10][i])).join(' ')).join('\n'))
  fs.writeFileSync(path.join(HERE, 'vm-results.json'), JSON.stringify(results, null, 2))
} finally {
  registry?.child.kill()
}
