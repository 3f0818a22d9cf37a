// The EROFS writer benchmark: `node bench/erofs.mjs`.
//
// Builds what it runs (release builds of the erofs crate's examples and of
// the bench-only crate bench/erofs-anchor), makes its inputs once and keeps
// them in target/bench-erofs/, then measures side by side, in one run, REPS
// repetitions each (the order of the tools rotating between repetitions,
// every output removed, `sync` run and the disk left to go quiet, untimed,
// between commands):
//
//   floor       `erofs-anchor floor TAR OUT`: read the tar, write the same
//               bytes, fsync
//   ours        `tar2erofs TAR OUT` (the crate's example: stream the tar into
//               an image, its data handed to writeback as it goes, fsync it,
//               rename it in)
//   msb         `erofs-anchor msb TAR OUT SPOOL`: microsandbox's own writer,
//               microsandbox-image 0.7.13 (`tar::ingest_compressed_tar`, then
//               `erofs::write_erofs`), then an fsync
//   mkfs.erofs  `tar -x` of the tar into a directory, then
//               `mkfs.erofs -E noinline_data OUT DIR` (erofs-utils 1.5), then
//               `sync OUT`
//   floor, ours without the fsync (`erofs-anchor floor|erofs ... --no-sync`):
//               what the work costs before the disk has it, to show the
//               writer's own overhead when the fsync dominates
//
// Input: corpus.tar, a Debian minbase root from debootstrap (shared with the
// erofs tests' cache, target/erofs-tests/debian/minbase.tar) followed by
// this machine's /usr/share, /usr/lib/python3*, /usr/lib/gcc under host/;
// about 1 GiB and 60,000 entries. corpus-2g.tar adds /usr/lib/x86_64-linux-gnu
// and /usr/lib/llvm-* under host2/ (about 2 GiB) for the memory target.
//
// EROFS_BEFORE=PATH adds `before`, another build of tar2erofs (an older
// commit's), to the same rotation, and compares its image with ours byte for
// byte. Builds and inputs go under CARGO_TARGET_DIR when it is set.
//
// Each tool's wall time and CPU time (user + system, from /usr/bin/time)
// are reported: on a shared machine the CPU time is the steadier measure
// of what a tool itself does.
//
// Once: sizes (ours against mkfs.erofs's image of the same tree), the fsmeta
// of our image against the layer's size, fsck.erofs of ours, the peak RSS
// of ours and msb on the 2 GiB tar.
//
// Targets: ours <= 1.3x the floor (so >= 4x faster than msb); ours <=
// mkfs.erofs's size + 0.1%; fsmeta <= 0.5% of the layer images; peak RSS
// < 100 MiB on a 2 GiB layer. Prints a table and writes
// bench/erofs-results.json (git-ignored). REPS=1 for a quick run.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MiB, fmtS, fmtX, log, machine, runner, stats } from './lib.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const REPS = Number(process.env.REPS ?? 3)
// Cargo's target directory: CARGO_TARGET_DIR when set (the anchor crate
// builds there too), else each crate's own target/.
const TARGET = path.resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target')
const DATA = path.join(TARGET, 'bench-erofs')
const WORK = path.join(DATA, 'work')
const OURS = path.join(TARGET, 'release', 'examples', 'tar2erofs')
const MERGE = path.join(TARGET, 'release', 'examples', 'merge')
const ANCHOR = process.env.CARGO_TARGET_DIR
  ? path.join(TARGET, 'release', 'erofs-anchor')
  : path.join(HERE, 'erofs-anchor', 'target', 'release', 'erofs-anchor')
// EROFS_BEFORE=PATH: another build of tar2erofs (an older commit's) run in
// the same rotation as `before`, for a side-by-side comparison.
const BEFORE = process.env.EROFS_BEFORE ? path.resolve(process.env.EROFS_BEFORE) : null

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * MiB, ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status})`)
  return r.stdout
}

function build() {
  log('== building (release): erofs examples, bench/erofs-anchor')
  sh('cargo', ['build', '--release', '-j2', '-p', 'erofs', '--example', 'tar2erofs', '--example', 'merge'], { cwd: ROOT })
  sh('cargo', ['build', '--release', '-j2'], { cwd: path.join(HERE, 'erofs-anchor') })
}

function debian() {
  const cache = path.join(TARGET, 'erofs-tests', 'debian')
  const tar = path.join(cache, 'minbase.tar')
  if (fs.existsSync(tar)) return tar
  fs.mkdirSync(cache, { recursive: true })
  const root = path.join(cache, 'rootfs')
  fs.rmSync(root, { recursive: true, force: true })
  const mirror = process.env.EROFS_TEST_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian'
  log(`== debootstrap --variant=minbase bookworm (${mirror}), once`)
  sh('debootstrap', ['--variant=minbase', 'bookworm', root, mirror])
  sh('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-cf', tar + '.partial', '-C', root, '.'])
  fs.renameSync(tar + '.partial', tar)
  fs.rmSync(root, { recursive: true, force: true })
  return tar
}

// The disk under the work directory, to wait for it to go quiet: deleting a
// gigabyte on a file system mounted with `discard` keeps the disk busy with
// TRIMs long after `sync` returns, and would slow whatever runs next.
function diskStat() {
  const src = sh('findmnt', ['-n', '-o', 'SOURCE', '--target', WORK]).trim()
  const dev = path.basename(fs.realpathSync(src))
  const p = `/sys/class/block/${dev}/stat`
  return fs.existsSync(p) ? p : null
}

function settle(stat) {
  if (!stat) return 0
  const t0 = Date.now()
  const read = () => fs.readFileSync(stat, 'utf8').trim().split(/\s+/).map(Number)
  let prev = read()
  let quiet = 0
  while (Date.now() - t0 < 30_000 && quiet < 3) {
    spawnSync('sleep', ['0.3'])
    const cur = read()
    // in flight, sectors written, sectors discarded
    const busy = cur[8] > 0 || cur[6] !== prev[6] || (cur[13] ?? 0) !== (prev[13] ?? 0)
    quiet = busy ? 0 : quiet + 1
    prev = cur
  }
  return Date.now() - t0
}

const existing = (ps) => ps.filter((p) => fs.existsSync('/' + p))
const glob = (dir, re) => (fs.existsSync('/' + dir) ? fs.readdirSync('/' + dir).filter((n) => re.test(n)).map((n) => `${dir}/${n}`) : [])

function corpus() {
  fs.mkdirSync(DATA, { recursive: true })
  const one = path.join(DATA, 'corpus.tar')
  const two = path.join(DATA, 'corpus-2g.tar')
  const host = (out, prefix, paths) => {
    sh('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', `--transform=s,^,${prefix}/,`, '-cf', out, '-C', '/', ...paths])
  }
  if (!fs.existsSync(one)) {
    log('== making corpus.tar (once)')
    fs.copyFileSync(debian(), one + '.partial')
    const h = path.join(DATA, 'host.tar')
    host(h, 'host', existing(['usr/share', ...glob('usr/lib', /^python3/), 'usr/lib/gcc']))
    sh('tar', ['-A', '-f', one + '.partial', h])
    fs.rmSync(h)
    fs.renameSync(one + '.partial', one)
  }
  if (!fs.existsSync(two)) {
    log('== making corpus-2g.tar (once)')
    fs.copyFileSync(one, two + '.partial')
    const h = path.join(DATA, 'host2.tar')
    host(h, 'host2', existing(['usr/lib/x86_64-linux-gnu', ...glob('usr/lib', /^llvm-/)]))
    sh('tar', ['-A', '-f', two + '.partial', h])
    fs.rmSync(h)
    fs.renameSync(two + '.partial', two)
  }
  return { one, two }
}

const entries = (tar) => Number(sh('sh', ['-c', `tar -tf '${tar}' | wc -l`]).trim())

function main() {
  build()
  const { one, two } = corpus()
  fs.rmSync(WORK, { recursive: true, force: true })
  fs.mkdirSync(WORK, { recursive: true })
  const r0 = runner(WORK)
  const { run, syncAll } = r0
  const stat = diskStat()
  const discard = (p) => {
    r0.discard(p)
    settle(stat)
  }
  const size = (p) => fs.statSync(p).size
  const tarBytes = size(one)
  const tarEntries = entries(one)
  log(`== corpus.tar: ${(tarBytes / MiB).toFixed(0)} MiB, ${tarEntries} entries; ${REPS} repetitions`)
  // Warm the page cache: every tool reads the tar from memory.
  sh('sh', ['-c', `cat '${one}' > /dev/null`])
  syncAll()

  const out = path.join(WORK, 'out')
  const tools = {
    floor: () => run(ANCHOR, ['floor', one, out]),
    ours: () => run(OURS, [one, out]),
    msb: () => run(ANCHOR, ['msb', one, out, path.join(WORK, 'spool')]),
    mkfs: () =>
      run(`tar --xattrs --xattrs-include='*' --numeric-owner -xpf '${one}' -C '${WORK}/x' && mkfs.erofs -E noinline_data '${out}' '${WORK}/x' >/dev/null && sync '${out}'`, [], { shell: true }),
    floorNoSync: () => run(ANCHOR, ['floor', one, out, '--no-sync']),
    oursNoSync: () => run(ANCHOR, ['erofs', one, out, '--no-sync']),
  }
  if (BEFORE) tools.before = () => run(BEFORE, [one, out])
  const names = Object.keys(tools)
  const samples = Object.fromEntries(names.map((n) => [n, []]))
  const sizes = {}
  for (let r = 0; r < REPS; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length])
    for (const n of order) {
      fs.mkdirSync(path.join(WORK, 'x'), { recursive: true })
      const s = tools[n]()
      sizes[n] = size(out)
      if (n === 'ours' && r === 0) {
        sh('fsck.erofs', [out])
        fs.copyFileSync(out, path.join(WORK, 'ours.erofs'))
      }
      if (n === 'before' && r === 0) fs.copyFileSync(out, path.join(WORK, 'before.erofs'))
      samples[n].push(s)
      log(`   ${n.padEnd(11)} ${fmtS(s.ms)}  ${(s.rssKiB / 1024).toFixed(0)} MiB peak RSS`)
      discard(out)
      discard(path.join(WORK, 'x'))
      discard(path.join(WORK, 'spool'))
    }
  }

  // The fsmeta of our layer image.
  const fsmeta = path.join(WORK, 'fsmeta.erofs')
  sh(MERGE, ['--vmdk', path.join(WORK, 'disk.vmdk'), fsmeta, path.join(WORK, 'ours.erofs')])
  sh('fsck.erofs', [`--device=${path.join(WORK, 'ours.erofs')}`, fsmeta])
  const layerBytes = size(path.join(WORK, 'ours.erofs'))
  const fsmetaBytes = size(fsmeta)

  // Memory on a 2 GiB layer.
  const two2 = { bytes: size(two), entries: entries(two) }
  sh('sh', ['-c', `cat '${two}' > /dev/null`])
  const big = {}
  for (const n of ['ours', 'msb']) {
    const s = n === 'ours' ? run(OURS, [two, out]) : run(ANCHOR, ['msb', two, out, path.join(WORK, 'spool')])
    big[n] = { ms: s.ms, rssMiB: s.rssKiB / 1024, size: size(out) }
    log(`   2 GiB ${n}: ${fmtS(s.ms)}, ${(s.rssKiB / 1024).toFixed(0)} MiB peak RSS`)
    discard(out)
    discard(path.join(WORK, 'spool'))
  }

  const med = Object.fromEntries(names.map((n) => [n, stats(samples[n].map((s) => s.ms))]))
  const rss = Object.fromEntries(names.map((n) => [n, Math.max(...samples[n].map((s) => s.rssKiB)) / 1024]))
  const x = (n) => med[n].median / med.floor.median
  // CPU time (user + system) of each command: what the tool itself does,
  // far steadier than wall time on a shared machine.
  const cpu = Object.fromEntries(names.map((n) => [n, stats(samples[n].map((s) => s.cpuMs))]))
  const row = (label, n, ratio) => [label, `${fmtS(med[n].median)} (${fmtS(med[n].min)})`, ratio, `${fmtS(cpu[n].median)} (${fmtS(cpu[n].min)})`, `${rss[n].toFixed(0)} MiB`]
  const rows = [
    row('floor (copy + fsync)', 'floor', '1.00x'),
    row('ours (tar2erofs)', 'ours', fmtX(x('ours'))),
    row('microsandbox-image 0.7.13', 'msb', fmtX(x('msb'))),
    row('tar -x + mkfs.erofs -E noinline_data', 'mkfs', fmtX(x('mkfs'))),
    row('floor without fsync', 'floorNoSync', '(1.00x)'),
    row('ours without fsync', 'oursNoSync', `(${fmtX(med.oursNoSync.median / med.floorNoSync.median)})`),
  ]
  if (BEFORE) rows.push(row(`before (${path.basename(BEFORE)})`, 'before', fmtX(x('before'))))
  console.log(`\ncorpus.tar: ${tarBytes} bytes, ${tarEntries} entries; medians of ${REPS} (min)\n`)
  console.log('| tool | time | / floor | CPU (user + sys) | peak RSS |\n|---|---|---|---|---|')
  for (const r of rows) console.log(`| ${r.join(' | ')} |`)
  console.log(`\nCPU: msb / ours ${fmtX(cpu.msb.median / cpu.ours.median)}, ours / floor ${fmtX(cpu.ours.median / cpu.floor.median)}`)
  const checks = {
    'ours / floor <= 1.3x': x('ours') <= 1.3,
    'ours / floor <= 2x (issue 24)': x('ours') <= 2,
    'msb / ours >= 4x': med.msb.median / med.ours.median >= 4,
    'msb / ours >= 3.5x (issue 24)': med.msb.median / med.ours.median >= 3.5,
    'size <= mkfs.erofs + 0.1%': sizes.ours <= sizes.mkfs * 1.001,
    'fsmeta <= 0.5% of the layer': fsmetaBytes <= layerBytes * 0.005,
    'peak RSS < 100 MiB on 2 GiB': big.ours.rssMiB < 100,
  }
  console.log(`\nmsb / ours: ${fmtX(med.msb.median / med.ours.median)}, mkfs / ours: ${fmtX(med.mkfs.median / med.ours.median)}`)
  console.log(`sizes: ours ${sizes.ours}, mkfs.erofs ${sizes.mkfs} (${((sizes.ours / sizes.mkfs - 1) * 100).toFixed(3)}%), msb ${sizes.msb}, tar ${tarBytes}`)
  console.log(`fsmeta: ${fsmetaBytes} bytes for a ${layerBytes}-byte layer (${((fsmetaBytes / layerBytes) * 100).toFixed(3)}%)`)
  console.log(`2 GiB tar (${two2.bytes} bytes, ${two2.entries} entries): ours ${fmtS(big.ours.ms)} ${big.ours.rssMiB.toFixed(0)} MiB peak RSS; msb ${fmtS(big.msb.ms)} ${big.msb.rssMiB.toFixed(0)} MiB`)
  if (BEFORE) {
    const same = spawnSync('cmp', ['-s', path.join(WORK, 'before.erofs'), path.join(WORK, 'ours.erofs')]).status === 0
    console.log(`before: msb / before ${fmtX(med.msb.median / med.before.median)}, before / ours ${fmtX(med.before.median / med.ours.median)} (CPU ${fmtX(cpu.before.median / cpu.ours.median)}); images ${same ? 'byte-identical' : 'DIFFER'}`)
  }
  for (const [k, ok] of Object.entries(checks)) console.log(`${ok ? 'met   ' : 'MISSED'} ${k}`)
  const results = { machine: machine(), reps: REPS, tarBytes, tarEntries, medians: med, cpu, rss, sizes, layerBytes, fsmetaBytes, big, two: two2, checks }
  fs.writeFileSync(path.join(HERE, 'erofs-results.json'), JSON.stringify(results, null, 2))
  fs.rmSync(WORK, { recursive: true, force: true })
}

main()
