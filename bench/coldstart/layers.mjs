// The layers and JSON blobs of bench/coldstart.mjs's images: seeded, so a
// rebuild writes the same bytes.

import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'

import { tarHeader } from '../lib.mjs'

/** A seeded PRNG (mulberry32): a float in [0, 1). */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Writes one gzip layer (`level` 6) holding `entries` (`{ name, data }`
 * files, `{ name }` directories when the name ends in '/'; `data` may be a
 * function returning the bytes). Returns `{ digest, size, diffId }`.
 */
export async function writeLayer(file, entries) {
  const diff = crypto.createHash('sha256')
  const blob = crypto.createHash('sha256')
  const gz = zlib.createGzip({ level: 6 })
  const out = fs.createWriteStream(file)
  gz.on('data', (b) => blob.update(b))
  gz.pipe(out)
  const put = async (b) => {
    diff.update(b)
    if (!gz.write(b)) await new Promise((r) => gz.once('drain', r))
  }
  for (const e of entries) {
    if (e.name.endsWith('/')) {
      await put(tarHeader(e.name, 0, 0o755, '5'))
      continue
    }
    const data = typeof e.data === 'function' ? e.data() : e.data
    await put(tarHeader(e.name, data.length, e.mode ?? 0o644, '0'))
    await put(data)
    await put(Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  await put(Buffer.alloc(1024))
  gz.end()
  await new Promise((r) => out.on('close', r))
  return { digest: 'sha256:' + blob.digest('hex'), size: fs.statSync(file).size, diffId: 'sha256:' + diff.digest('hex') }
}

/**
 * The entries of data layer `k` of `img`: files of 4 KiB to 4 MiB
 * (log-uniform, seeded) under data/<k>/dNN/, `layerBytes` in all, each half
 * AES-CTR keystream, half text.
 */
export function dataEntries(img, k) {
  const rand = prng(0xc0ffee + k * 7919 + img.name.length)
  const key = crypto.createHash('sha256').update(`coldstart-${img.name}-${k}`).digest()
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const text = Buffer.from(`${img.name} layer ${k}: the quick brown fox jumps over the lazy dog 0123456789\n`.repeat(1 << 16))
  const entries = [{ name: 'data/' }, { name: `data/${k}/` }]
  let total = 0
  for (let i = 0; total < img.layerBytes; i++) {
    const sub = `data/${k}/d${String(Math.floor(i / 100)).padStart(2, '0')}/`
    if (i % 100 === 0) entries.push({ name: sub })
    const size = Math.min(Math.round(4096 * Math.pow(1024, rand())), img.layerBytes - total)
    total += size
    const half = size >> 1
    entries.push({
      name: `${sub}f${String(i).padStart(5, '0')}.bin`,
      size,
      data: () => Buffer.concat([cipher.update(Buffer.alloc(half)), text.subarray(0, size - half)]),
    })
  }
  return entries
}

/** Puts a JSON blob into a layout's blobs; its descriptor. */
export function putJson(blobs, obj) {
  const b = Buffer.from(JSON.stringify(obj))
  const hex = crypto.createHash('sha256').update(b).digest('hex')
  fs.writeFileSync(path.join(blobs, hex), b)
  return { digest: 'sha256:' + hex, size: b.length }
}
