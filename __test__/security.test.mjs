// Arguments an attacker (or a bug) hands the binding: getters that throw,
// Proxies whose traps throw. Every one is a rejected promise with
// `InvalidArgument`, never a synchronous throw without a code.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { Image, freshBackend, rejectsWith } from './helpers.mjs';

const boom = () => { throw new Error('boom'); };

describe('hostile arguments', () => {
  test('a throwing getter in an options object rejects with InvalidArgument', async (t) => {
    const { backend } = freshBackend(t);
    const opts = Object.defineProperty({}, 'force', { get: boom, enumerable: true });
    const calls = [
      () => Image.removeLocal(backend, 'a', opts),
      () => Image.pruneLocal(backend, Object.defineProperty({}, 'dryRun', { get: boom })),
      () => Image.acquireLocal(backend, 'a', Object.defineProperty({}, 'id', { get: boom })),
      () => Image.loadLocal(backend, '/nope', Object.defineProperty({}, 'onProgress', { get: boom })),
      () => Image.pullLocal(backend, 'a', Object.defineProperty({}, 'policy', { get: boom })),
      () => Image.verifyLocal(backend, Object.defineProperty({}, 'repair', { get: boom })),
    ];
    for (const call of calls) {
      let promise;
      assert.doesNotThrow(() => { promise = call(); }, 'a synchronous throw');
      await rejectsWith(() => promise, 'InvalidArgument');
    }
  });

  test('a Proxy whose traps throw rejects with InvalidArgument', async (t) => {
    const { backend } = freshBackend(t);
    const proxy = new Proxy({}, { get: boom, has: boom, ownKeys: boom, getOwnPropertyDescriptor: boom });
    const calls = [
      () => Image.removeLocal(backend, 'a', proxy),
      () => Image.pullLocal(backend, 'a', { mirrors: proxy }),
      () => Image.pullLocal(backend, 'a', { mirrors: { 'docker.io': new Proxy([], { get: boom }) } }),
      () => Image.saveLocal(backend, new Proxy(['a'], { get: boom }), '/tmp/x.tar'),
    ];
    for (const call of calls) {
      let promise;
      assert.doesNotThrow(() => { promise = call(); }, 'a synchronous throw');
      await rejectsWith(() => promise, 'InvalidArgument');
    }
  });
});
