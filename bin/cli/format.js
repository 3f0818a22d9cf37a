'use strict';
// Human output for the CLI: sizes as docker prints them (powers of 1000,
// three significant digits), relative times, counts with their nouns,
// aligned tables.

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/** `1234567` -> `1.23MB`, as `docker images` writes sizes. */
function humanSize(bytes) {
  let n = Number(bytes);
  let u = 0;
  while (n >= 1000 && u < UNITS.length - 1) {
    n /= 1000;
    u += 1;
  }
  const digits = n >= 100 || u === 0 ? 0 : n >= 10 ? 1 : 2;
  return `${n.toFixed(digits)}${UNITS[u]}`;
}

/** A past instant as `5 seconds ago`, `3 hours ago`, `2 weeks ago`; `never` for null. */
function ago(date, now = Date.now()) {
  if (!date) return 'never';
  const s = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (s < 1) return 'just now';
  const steps = [
    [60, 'second', 1],
    [3600, 'minute', 60],
    [86400, 'hour', 3600],
    [86400 * 14, 'day', 86400],
    [86400 * 60, 'week', 86400 * 7],
    [86400 * 730, 'month', 86400 * 30],
    [Infinity, 'year', 86400 * 365],
  ];
  for (const [limit, unit, per] of steps) {
    if (s < limit) {
      const n = Math.floor(s / per);
      return `${n} ${unit}${n === 1 ? '' : 's'} ago`;
    }
  }
  return 'long ago';
}

/** A past instant as `ago` writes it, `-` when it is not known. */
function agoOrDash(date, now = Date.now()) {
  return date ? ago(date, now) : '-';
}

/** `1 layer`, `2 layers`, `0 temporary files`: a count and its noun, plural unless one. */
function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** Rows of cells as columns separated by three spaces, headed by `head`. */
function table(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (i === cells.length - 1 ? String(c) : String(c).padEnd(widths[i]))).join('   ');
  return [line(head), ...rows.map(line)].join('\n');
}

/** `sha256:0123456789ab...` -> `0123456789ab` (12 hex characters, as docker's IMAGE ID). */
function shortDigest(digest) {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

module.exports = { humanSize, ago, agoOrDash, count, table, shortDigest };
