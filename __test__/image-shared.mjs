// What image.test.mjs and image-leases.test.mjs share: the fixtures'
// manifests and the handle assertions.

import assert from 'node:assert/strict';

import { ImageHandle, MANIFEST } from './helpers.mjs';

export const RICH = MANIFEST.rich;
export const BASE = MANIFEST['pair/base'];
export const APP = MANIFEST['pair/app'];
export const AMD64 = MANIFEST['multiarch/amd64'];
export const ARM64 = MANIFEST['multiarch/arm64'];
export const HANDLE_FIELDS = [
  'reference', 'sizeBytes', 'manifestDigest', 'architecture', 'os', 'layerCount', 'lastUsedAt', 'createdAt',
  'imageCreatedAt', 'diskReady',
];
export const LEASE_FIELDS = ['id', 'kind', 'reference', 'manifestDigest', 'createdAt', 'expiresAt', 'disk'];

/** Asserts `h` is an ImageHandle for the given manifest.json summary. */
export function assertHandle(h, reference, summary, { architecture = 'amd64' } = {}) {
  assert.ok(h instanceof ImageHandle, 'not an ImageHandle instance');
  assert.equal(h.reference, reference);
  assert.equal(h.manifestDigest, summary.manifestDigest);
  assert.equal(typeof h.sizeBytes, 'number');
  assert.equal(h.sizeBytes, summary.totalSize);
  assert.equal(h.layerCount, summary.layers.length);
  assert.equal(h.architecture, architecture);
  assert.equal(h.os, 'linux');
  assert.ok(h.createdAt instanceof Date, 'createdAt is not a Date');
  assert.ok(!Number.isNaN(h.createdAt.getTime()));
}

/** Asserts the handle's toJSON() is a plain object with the getters' values. */
export function assertToJSON(h) {
  const j = h.toJSON();
  assert.equal(Object.getPrototypeOf(j), Object.prototype, 'toJSON() is not a plain object');
  assert.deepEqual(Object.keys(j).sort(), [...HANDLE_FIELDS].sort());
  for (const k of HANDLE_FIELDS) assert.deepEqual(j[k], h[k], `toJSON().${k}`);
  return j;
}

export const inRange = (date, lo, hi, slack = 1000) => {
  assert.ok(date instanceof Date, `${date} is not a Date`);
  const t = date.getTime();
  assert.ok(t >= lo - slack && t <= hi + slack, `${date.toISOString()} not within [${new Date(lo).toISOString()}, ${new Date(hi).toISOString()}]`);
};
