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
const DATA = path.join(ROOT, 'target', 'bench-vm')
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip'

if (process.argv[2] === '--child') {
  const [op, home, ref] = process.argv.slice(3)
  const { Image, LocalBackend } = createRequire(import.meta.url)(path.join(ROOT, 'index.js'))
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
  const tar = path.join(ROOT, 'target', 'erofs-tests', 'debian', 'minbase.tar')
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
const child = (op, home, ref) => run(process.execPath, [fileURLToPath(import.meta.url), '--child', op, home, ref])
let registry = null

try {
  results.machine.umoci = sh('umoci', ['--version']).trim()
  results.machine.mkfsErofs = (spawnSync('mkfs.erofs', ['--version'], { encoding: 'utf8' }).stdout || '').split('\n')[0].trim()
  const images = layouts()
  const bytes = (ls) => ls.reduce((a, l) => a + l.size, 0)
  results.image = { layers: images.big.layers.length, compressedBytes: bytes(images.big.layers) }
  log(`image: ${(results.image.compressedBytes / MiB).toFixed(0)} MiB in ${results.image.layers} gzip layers`)

  // A home that holds all three images.
  const home = path.join(work, 'home')
  for (const name of ['big', 'big2', 'top']) child('load', home, images[name].dir)
  const tools = {
    ours: () => {
      child('drop-disks', home, '-')
      syncAll()
      return child('materialize', home, 'big')
    },
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
  const samples = { ours: [], floor: [], umoci: [] }
  const rss = { ours: [] }
  const order = Object.keys(tools)
  for (let rep = 0; rep < REPS; rep++) {
    for (let k = 0; k < order.length; k++) {
      const name = order[(rep + k) % order.length]
      syncAll()
      const r = tools[name]()
      samples[name].push(r.ms)
      if (name === 'ours') rss.ours.push(r.rssKiB)
      log(`rep ${rep + 1} ${name}: ${fmtS(r.ms)}`)
    }
  }
  // Shared layers: big2 after big (only its top layer is new) against top alone.
  const shared = { big2: [], top: [] }
  for (let rep = 0; rep < REPS; rep++) {
    child('drop-disks', home, '-')
    child('materialize', home, 'big')
    syncAll()
    shared.big2.push(child('materialize', home, 'big2').ms)
    child('drop-disks', home, '-')
    syncAll()
    shared.top.push(child('materialize', home, 'top').ms)
    log(`rep ${rep + 1} shared: big2 ${fmtS(shared.big2.at(-1))}, top ${fmtS(shared.top.at(-1))}`)
  }
  const du = JSON.parse(sh(process.execPath, ['-e', `const {Image,LocalBackend}=require(${JSON.stringify(path.join(ROOT, 'index.js'))});Image.diskUsageLocal(new LocalBackend({home:${JSON.stringify(home)}})).then(u=>console.log(JSON.stringify(u)))`]))
  results.vmBytesBigAndTop = du.vmBytes

  // Pulls: plain and materializing, each into an empty home.
  fs.mkdirSync(path.join(work, 'registry'))
  registry = await startRegistry(path.join(work, 'registry'))
  sh('skopeo', ['copy', '-q', '--insecure-policy', '--dest-tls-verify=false', `oci:${images.big.dir}:big`, `docker://${registry.addr}/big:1`])
  const ref = `${registry.addr}/big:1`
  const pulls = { plain: [], materialize: [] }
  const pullRss = []
  for (let rep = 0; rep < REPS; rep++) {
    for (const kind of rep % 2 ? ['materialize', 'plain'] : ['plain', 'materialize']) {
      const h = path.join(work, `pull-${kind}`)
      syncAll()
      const r = child(kind === 'plain' ? 'pull' : 'pull-materialize', h, ref)
      pulls[kind].push(r.ms)
      if (kind === 'materialize') pullRss.push(r.rssKiB)
      log(`rep ${rep + 1} pull ${kind}: ${fmtS(r.ms)}`)
      discard(h)
    }
  }

  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, stats(v)]))
  results.materialize = s
  results.shared = { big2: stats(shared.big2), top: stats(shared.top) }
  results.pull = { plain: stats(pulls.plain), materialize: stats(pulls.materialize) }
  results.peakRssMiB = { materialize: Math.max(...rss.ours) / 1024, pullMaterialize: Math.max(...pullRss) / 1024 }
  const ratio = {
    oursOverFloor: s.ours.median / s.floor.median,
    umociOverOurs: s.umoci.median / s.ours.median,
    materializingPullOverPlain: results.pull.materialize.median / results.pull.plain.median,
    sharedOverTopAlone: results.shared.big2.median / results.shared.top.median,
  }
  results.ratios = ratio
  const rows = [
    ['materialize (ours)', fmtS(s.ours.median), `${fmtX(ratio.oursOverFloor)} the floor`, '<= 1.3x'],
    ['floor (gzip -dc + sync)', fmtS(s.floor.median), '', ''],
    ['umoci unpack + mkfs.erofs', fmtS(s.umoci.median), `${fmtX(ratio.umociOverOurs)} ours`, '>= 4x'],
    ['second image, 1 new layer', fmtS(results.shared.big2.median), `${fmtX(ratio.sharedOverTopAlone)} that layer alone`, '~1x'],
    ['that layer alone', fmtS(results.shared.top.median), '', ''],
    ['pull', fmtS(results.pull.plain.median), '', ''],
    ['pull { materialize }', fmtS(results.pull.materialize.median), `${fmtX(ratio.materializingPullOverPlain)} a plain pull`, '<= 1.25x'],
    ['peak RSS materialize / pull', `${results.peakRssMiB.materialize.toFixed(0)} / ${results.peakRssMiB.pullMaterialize.toFixed(0)} MiB`, '', '< 100 MiB'],
  ]
  console.log(rows.map((r) => r.map((c, i) => String(c).padEnd([30, 12, 28, 10][i])).join(' ')).join('\n'))
  fs.writeFileSync(path.join(HERE, 'vm-results.json'), JSON.stringify(results, null, 2))
} finally {
  registry?.child.kill()
}
