'use strict';
// Progress of pulls and loads. On a terminal, one bar per blob redrawn in
// place (bytes, rate, per layer); otherwise plain lines, one per finished
// blob and phase, so a log or a pipe stays readable. With --json nothing is
// drawn at all: stdout carries the result alone.

const { humanSize } = require('./format');

const BAR = 24;

function bar(fraction) {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * BAR);
  return `[${'='.repeat(Math.max(0, full - 1))}${full > 0 ? (full === BAR ? '=' : '>') : ''}${' '.repeat(BAR - full)}]`;
}

/**
 * A reporter for `onProgress`: `stream` is where it writes (stderr), `tty`
 * whether to draw bars. Returns `{ onProgress, done() }`.
 */
function reporter(stream, tty) {
  const blobs = new Map(); // digest -> { bytes, total, phase, started }
  const finished = new Set();
  let drawn = 0;
  let last = 0;
  const t0 = Date.now();

  function draw(force) {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    const lines = [];
    for (const [digest, b] of blobs) {
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

  function onProgress(e) {
    if (e.phase === 'commit') {
      if (tty) draw(true);
      stream.write(`committed ${humanSize(e.bytes)} in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
      return;
    }
    const key = e.digest ?? e.phase;
    let b = blobs.get(key);
    if (!b) {
      b = { bytes: 0, total: e.totalBytes, phase: e.phase, started: Date.now() };
      blobs.set(key, b);
    }
    b.bytes = e.bytes;
    b.total = e.totalBytes ?? b.total;
    b.phase = e.phase;
    if (tty) {
      draw(false);
    } else if (b.total != null && e.bytes >= b.total && !finished.has(`${key} ${e.phase}`)) {
      finished.add(`${key} ${e.phase}`);
      const what = key.startsWith('sha256:') ? ` ${key.slice(7, 19)}` : '';
      stream.write(`${e.phase}${what} ${humanSize(e.bytes)}\n`);
    }
  }

  return {
    onProgress,
    done() {
      if (tty && blobs.size > 0) draw(true);
    },
  };
}

module.exports = { reporter };
