// Builds a synthetic microsandbox cache home, deterministically.
//
//   $HOME/cache/oci/{oci-layout,index.json,blobs/sha256/<hex>}
//   $HOME/cache/tmp/   $HOME/cache/lock   $HOME/leases/<id>.json
//
// Everything is valid OCI (umoci and skopeo read it): layers are real
// gzip-compressed tar archives holding one small random file, configs are
// OCI image configs whose rootfs.diff_ids are the digests of the
// uncompressed tars, manifests are OCI image manifests. Every blob is
// stored under its real sha256. index.json carries one descriptor per
// reference with the annotations the cache writes itself
// (crates/microsandbox/src/model.rs), so `list` never opens a blob.
//
// The same seed and options give the same bytes on every run.
//
// Use as a module:  import { synthesize } from './synth.mjs'
// or from a shell:  node bench/synth.mjs <home> [--layers N] [--manifests N]
//                   [--refs-per-manifest N] [--keep-refs N] [--lease-kept] [--seed N]
//                   [--link-blobs-from <home>]

import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { gzipSync } from 'node:zlib'

const MEDIA_INDEX = 'application/vnd.oci.image.index.v1+json'
const MEDIA_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const MEDIA_CONFIG = 'application/vnd.oci.image.config.v1+json'
const MEDIA_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'

const ANN_CREATED = 'dev.microsandbox.created'
const ANN_LAYERS = 'dev.microsandbox.layers'
const ANN_SIZE = 'dev.microsandbox.size'
const ANN_REF_NAME = 'org.opencontainers.image.ref.name'

/** sfc32: a small, fast, seedable PRNG (uint32 outputs). */
export function prng(seed) {
  let a = 0x9e3779b9 ^ seed
  let b = 0x243f6a88 ^ (seed * 31)
  let c = 0xb7e15162 ^ (seed * 131)
  let d = 1
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0
    const t = (a + b + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) >>> 0
    return t
  }
  for (let i = 0; i < 20; i++) next()
  const rng = {
    u32: next,
    /** integer in [lo, hi] */
    int: (lo, hi) => lo + (next() % (hi - lo + 1)),
    bytes: (n) => {
      const buf = Buffer.allocUnsafe(n)
      let i = 0
      for (; i + 4 <= n; i += 4) buf.writeUInt32LE(next(), i)
      for (; i < n; i++) buf[i] = next() & 0xff
      return buf
    },
    shuffle: (arr) => {
      for (let i = arr.length - 1; i > 0; i--) {
        const j = next() % (i + 1)
        const t = arr[i]; arr[i] = arr[j]; arr[j] = t
      }
      return arr
    },
  }
  return rng
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')

/** A ustar archive with one regular file `name` holding `data`. */
function tarOne(name, data) {
  const header = Buffer.alloc(512)
  const put = (off, len, s) => header.write(s, off, len, 'ascii')
  const oct = (off, len, n) => put(off, len, n.toString(8).padStart(len - 1, '0') + '\0')
  put(0, 100, name)
  oct(100, 8, 0o644)
  oct(108, 8, 0)
  oct(116, 8, 0)
  oct(124, 12, data.length)
  oct(136, 12, 1704067200) // 2024-01-01T00:00:00Z
  header.fill(0x20, 148, 156) // checksum field counts as spaces
  put(156, 1, '0')
  put(257, 6, 'ustar\0')
  put(263, 2, '00')
  put(265, 32, 'root')
  put(297, 32, 'root')
  let sum = 0
  for (const b of header) sum += b
  put(148, 8, sum.toString(8).padStart(6, '0') + '\0 ')
  const pad = (512 - (data.length % 512)) % 512
  return Buffer.concat([header, data, Buffer.alloc(pad), Buffer.alloc(1024)])
}

/** How a reference is named: canonical (on disk) and familiar (as `list` shows it). */
export function refName(manifest, tagIndex) {
  const tag = `v${tagIndex + 1}`
  if (manifest % 2 === 0) {
    return {
      canonical: `docker.io/library/app-${manifest}:${tag}`,
      familiar: `app-${manifest}:${tag}`,
    }
  }
  return {
    canonical: `ghcr.io/org/app-${manifest}:${tag}`,
    familiar: `ghcr.io/org/app-${manifest}:${tag}`,
  }
}

/**
 * Writes a cache home at `home` (which must not exist or be empty).
 *
 * Options:
 * - layers: size of the shared layer pool (20000)
 * - manifests: manifests, each with its own config (5000)
 * - refsPerManifest: references per manifest (2)
 * - minLayers / maxLayers: layers per manifest, drawn from the pool (4 / 8)
 * - keepRefs: how many references keep their entry in index.json (all).
 *   Manifests are taken in a seeded random order and all references of a
 *   manifest are kept or dropped together, so keepRefs = 5000 of 10000
 *   leaves 2500 referenced manifests and 2500 dangling ones.
 * - leaseKept: also write one lease (leases/<id>.json, no expiry) per
 *   manifest that keeps references, as a running sandbox would hold
 * - seed: PRNG seed (1)
 * - linkBlobsFrom: the home of a cache made with the same seed and shape
 *   options (layers, manifests, min/maxLayers); its blob files are
 *   hard-linked instead of written again (blobs are never rewritten, so
 *   sharing their inodes is safe). Only index.json and leases differ.
 *
 * Returns a summary: the references in index.json, the blobs written, and
 * the blobs reachable from the kept references (what a correct GC keeps).
 */
export function synthesize(home, options = {}) {
  const {
    layers: layerCount = 20000,
    manifests: manifestCount = 5000,
    refsPerManifest = 2,
    minLayers = 4,
    maxLayers = 8,
    keepRefs = manifestCount * refsPerManifest,
    leaseKept = false,
    seed = 1,
    linkBlobsFrom = null,
  } = options
  if (maxLayers > layerCount) throw new Error('maxLayers > layers')
  const rng = prng(seed)
  const oci = path.join(home, 'cache', 'oci')
  const blobDir = path.join(oci, 'blobs', 'sha256')
  fs.mkdirSync(blobDir, { recursive: true })
  fs.mkdirSync(path.join(home, 'cache', 'tmp'), { recursive: true })
  fs.mkdirSync(path.join(home, 'leases'), { recursive: true })
  fs.writeFileSync(path.join(home, 'cache', 'lock'), '')
  fs.writeFileSync(path.join(oci, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')

  let blobBytes = 0
  const fromDir = linkBlobsFrom && path.join(linkBlobsFrom, 'cache', 'oci', 'blobs', 'sha256')
  const putBlob = (buf) => {
    const hex = sha256(buf)
    if (fromDir) fs.linkSync(path.join(fromDir, hex), path.join(blobDir, hex))
    else fs.writeFileSync(path.join(blobDir, hex), buf)
    blobBytes += buf.length
    return hex
  }

  // The shared layer pool.
  const layers = new Array(layerCount)
  for (let i = 0; i < layerCount; i++) {
    const content = rng.bytes(rng.int(64, 512))
    const tar = tarOne(`layer-${i}.bin`, content)
    const gz = gzipSync(tar, { level: 6 })
    layers[i] = { hex: putBlob(gz), size: gz.length, diffId: `sha256:${sha256(tar)}` }
  }

  // Manifests: the pool is dealt out first (every layer used at least
  // once), then drawn at random, so layers are shared across manifests.
  const deal = rng.shuffle(Array.from({ length: layerCount }, (_, i) => i))
  let dealt = 0
  const manifests = new Array(manifestCount)
  for (let m = 0; m < manifestCount; m++) {
    const k = rng.int(minLayers, maxLayers)
    const picked = []
    const seen = new Set()
    while (picked.length < k) {
      const l = dealt < layerCount ? deal[dealt++] : rng.u32() % layerCount
      if (seen.has(l)) continue
      seen.add(l)
      picked.push(l)
    }
    const config = {
      created: new Date(Date.UTC(2024, 0, 1) + m * 60000).toISOString(),
      architecture: 'amd64',
      os: 'linux',
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `APP_ID=${m}`],
        Cmd: ['/bin/app', `--instance=${m}`],
        WorkingDir: '/srv',
        Labels: { 'org.example.app': `app-${m}` },
        StopSignal: 'SIGTERM',
      },
      rootfs: { type: 'layers', diff_ids: picked.map((l) => layers[l].diffId) },
      history: picked.map((l) => ({
        created: '2024-01-01T00:00:00Z',
        created_by: `ADD layer-${l}.bin /`,
      })),
    }
    const configBuf = Buffer.from(JSON.stringify(config))
    const configHex = putBlob(configBuf)
    const manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_MANIFEST,
      config: { mediaType: MEDIA_CONFIG, digest: `sha256:${configHex}`, size: configBuf.length },
      layers: picked.map((l) => ({
        mediaType: MEDIA_LAYER,
        digest: `sha256:${layers[l].hex}`,
        size: layers[l].size,
      })),
    }
    const manifestBuf = Buffer.from(JSON.stringify(manifest))
    const manifestHex = putBlob(manifestBuf)
    const total = manifestBuf.length + configBuf.length + picked.reduce((s, l) => s + layers[l].size, 0)
    manifests[m] = {
      hex: manifestHex,
      size: manifestBuf.length,
      configHex,
      layers: picked,
      total,
    }
  }

  // References, manifest by manifest in a seeded order; the first
  // `keepRefs` stay in index.json.
  const order = rng.shuffle(Array.from({ length: manifestCount }, (_, i) => i))
  const base = Date.UTC(2025, 0, 1)
  const entries = []
  const kept = []
  const keptManifests = new Set()
  let r = 0
  for (const m of order) {
    for (let t = 0; t < refsPerManifest; t++, r++) {
      if (r >= keepRefs) continue
      const name = refName(m, t)
      const mf = manifests[m]
      entries.push({
        mediaType: MEDIA_MANIFEST,
        digest: `sha256:${mf.hex}`,
        size: mf.size,
        platform: { architecture: 'amd64', os: 'linux' },
        annotations: {
          [ANN_CREATED]: new Date(base + r * 1000 + (rng.u32() % 1000)).toISOString(),
          [ANN_LAYERS]: String(mf.layers.length),
          [ANN_SIZE]: String(mf.total),
          [ANN_REF_NAME]: name.canonical,
        },
      })
      kept.push({ ...name, manifest: m, digest: `sha256:${mf.hex}` })
      keptManifests.add(m)
    }
  }
  const index = { schemaVersion: 2, mediaType: MEDIA_INDEX, manifests: entries }
  fs.writeFileSync(path.join(oci, 'index.json'), JSON.stringify(index))

  if (leaseKept) {
    for (const m of keptManifests) {
      const id = `sandbox-${m}`
      const lease = {
        id,
        kind: 'sandbox',
        reference: refName(m, 0).canonical,
        manifestDigest: `sha256:${manifests[m].hex}`,
        createdAt: new Date(base + m * 1000).toISOString(),
      }
      fs.writeFileSync(path.join(home, 'leases', `${id}.json`), JSON.stringify(lease, null, 2))
    }
  }

  const reachable = new Set()
  for (const m of keptManifests) {
    const mf = manifests[m]
    reachable.add(mf.hex)
    reachable.add(mf.configHex)
    for (const l of mf.layers) reachable.add(layers[l].hex)
  }

  return {
    home,
    refs: kept,
    blobCount: layerCount + 2 * manifestCount,
    blobBytes,
    indexBytes: fs.statSync(path.join(oci, 'index.json')).size,
    keptManifests: keptManifests.size,
    reachable,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [home, ...rest] = process.argv.slice(2)
  if (!home) {
    console.error('usage: node bench/synth.mjs <home> [--layers N] [--manifests N] [--refs-per-manifest N] [--keep-refs N] [--lease-kept] [--seed N]')
    process.exit(2)
  }
  const opts = {}
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i]
    const key = flag.replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase())
    if (key === 'leaseKept') opts.leaseKept = true
    else if (key === 'linkBlobsFrom') opts.linkBlobsFrom = path.resolve(rest[++i])
    else opts[key] = Number(rest[++i])
  }
  const t = process.hrtime.bigint()
  const s = synthesize(path.resolve(home), opts)
  const ms = Number(process.hrtime.bigint() - t) / 1e6
  console.log(`${s.home}: ${s.refs.length} refs over ${s.keptManifests} manifests, ${s.blobCount} blobs (${(s.blobBytes / 1e6).toFixed(1)} MB), index.json ${(s.indexBytes / 1e6).toFixed(2)} MB, ${ms.toFixed(0)} ms`)
}
