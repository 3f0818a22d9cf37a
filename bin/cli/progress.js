'use strict';
// Progress of pulls and loads. On a terminal, one bar per blob redrawn in
// place (bytes, rate, per layer); otherwise plain lines, so a log or a pipe
// stays readable: the archive read, one line per layer once it is finished
// (`loaded sha256:0123456789ab… 1.20MB`, or `skipped ... (already in the
// cache)`), and the commit. With --json or -q nothing is drawn at all.
//
// The addon hands events over without ever blocking its worker, so some
// arrive after the operation's promise has settled: done() waits for the
// commit, the last event of every transfer, before it has the last word,
// and nothing is written after it.

const { humanSize } = require('./format');

const BAR = 24;
/** How long done() waits for a commit event still on its way. */
const COMMIT_WAIT_MS = 2000;

function bar(fraction) {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * BAR);
  return `[${'='.repeat(Math.max(0, full - 1))}${full > 0 ? (full === BAR ? '=' : '>') : ''}${' '.repeat(BAR - full)}]`;
}

/** `sha256:0123456789ab…`: a blob as the lines name it. */
function blobName(digest) {
  return digest.startsWith('sha256:') ? `${digest.slice(0, 19)}…` : digest;
}

/** Resolves when `promise` does, or after `ms`, whichever comes first. */
function within(promise, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * A reporter for `onProgress`: `stream` is where it writes (stderr), `tty`
 * whether to draw bars, `verb` what a layer that came in is said to be
 * (`pulled`, `loaded`). Returns `{ onProgress, done(), close() }`.
 *
 * Without a terminal each layer gets one line when it is finished: after
 * its `verify` (gzip layers), else at the commit. A layer whose bytes came
 * in is `verb`; one the cache already had (no source sends a `write` for
 * it) is `skipped`.
 */
function reporter(stream, { tty, verb }) {
  const bars = new Map(); // digest or phase -> { bytes, total, phase, started }
  const layers = new Map(); // digest -> { size, wrote, written }
  const told = new Set();
  let readTold = false;
  let seen = false;
  let commit = null; // the commit's line, written last by done()
  let closed = false;
  let drawn = 0;
  let last = 0;
  const t0 = Date.now();
  let commitSeen;
  const committed = new Promise((resolve) => {
    commitSeen = resolve;
  });

  function draw(force) {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    const lines = [];
    for (const [digest, b] of bars) {
      const secs = Math.max(0.001, (now - b.started) / 1000);
      const total = b.total ? humanSize(b.total) : '?';
      const rate = `${humanSize(b.bytes / secs)}/s`;
      const frac = b.total ? b.bytes / b.total : 0;
      const name = digest.startsWith('sha256:') ? digest.slice(7, 19) : digest.padEnd(12);
      lines.push(`${name}  ${b.phase.padEnd(6)} ${bar(frac)} ${humanSize(b.bytes).padStart(7)}/${total.padEnd(7)} ${rate}`);
    }
    let out = drawn > 0 ? `\x1b[${drawn}A` : '';
    for (const l of lines) out += `\r\x1b[2K${l}\n`;
    stream.write(out);
    drawn = lines.length;
  }

  function barFor(e) {
    const key = e.digest ?? e.phase;
    let b = bars.get(key);
    if (!b) {
      b = { bytes: 0, total: e.totalBytes, phase: e.phase, started: Date.now() };
      bars.set(key, b);
    }
    b.bytes = e.bytes;
    b.total = e.totalBytes ?? b.total;
    b.phase = e.phase;
    draw(false);
  }

  /** The one line of a finished layer. */
  function tell(digest, size) {
    if (told.has(digest)) return;
    told.add(digest);
    const came = Boolean(layers.get(digest)?.wrote);
    stream.write(came ? `${verb} ${blobName(digest)} ${humanSize(size)}\n` : `skipped ${blobName(digest)} ${humanSize(size)} (already in the cache)\n`);
  }

  function line(e) {
    const finished = e.totalBytes != null && e.bytes >= e.totalBytes;
    if (e.phase === 'read') {
      if (finished && !readTold) {
        readTold = true;
        stream.write(`read ${humanSize(e.bytes)}\n`);
      }
      return;
    }
    if (!e.digest) return;
    let l = layers.get(e.digest);
    if (!l) {
      l = { size: 0, wrote: false, written: false };
      layers.set(e.digest, l);
    }
    l.size = e.totalBytes ?? Math.max(l.size, e.bytes);
    if (e.phase === 'write') {
      // A verify may follow (gzip layers): the line waits for it, or the commit.
      l.wrote = true;
      l.written = finished;
    } else if (finished) {
      tell(e.digest, l.size);
    }
  }

  function onProgress(e) {
    if (closed) return;
    seen = true;
    if (e.phase === 'commit') {
      if (tty) draw(true);
      for (const [digest, l] of layers) if (l.written) tell(digest, l.size);
      commit = `committed ${humanSize(e.bytes)} in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`;
      commitSeen();
    } else if (tty) {
      barFor(e);
    } else {
      line(e);
    }
  }

  return {
    onProgress,
    /**
     * After the operation succeeded: waits for its commit (when one is
     * `expected`, or events came), then, without a terminal, tells each of
     * the result's `layers` (`{ digest, size }`) no event finished — layers
     * the cache had that need no decompression send none — and the commit's
     * line last. Nothing is written after it.
     */
    async done({ layers: all = [], expected = true } = {}) {
      if (closed) return;
      if (expected || seen) await within(committed, COMMIT_WAIT_MS);
      if (!tty) for (const l of all) tell(l.digest, l.size);
      else if (!commit && bars.size > 0) draw(true);
      if (commit) stream.write(commit);
      closed = true;
    },
    /** Stops all output (the operation failed). */
    close() {
      closed = true;
    },
  };
}

module.exports = { reporter };
