// Number and time formatting for axes, tooltips and log lines.

const pad = (n, w = 2) => String(n).padStart(w, "0");

function trim(x, digits) {
  return Number(x.toFixed(digits)).toString();
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function bytes(v) {
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < BYTE_UNITS.length - 1) { x /= 1024; i += 1; }
  return `${v < 0 ? "-" : ""}${trim(x, x >= 100 ? 0 : x >= 10 ? 1 : 2)} ${BYTE_UNITS[i]}`;
}

function count(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim(v / 1e9, 2)}G`;
  if (a >= 1e6) return `${trim(v / 1e6, 2)}M`;
  if (a >= 1e4) return `${trim(v / 1e3, 1)}k`;
  return trim(v, a >= 100 ? 0 : a >= 1 ? 2 : 3);
}

function seconds(v) {
  const a = Math.abs(v);
  if (a === 0) return "0 s";
  if (a < 1e-3) return `${trim(v * 1e6, 0)} µs`;
  if (a < 1) return `${trim(v * 1e3, a < 0.01 ? 2 : 1)} ms`;
  return `${trim(v, 2)} s`;
}

/** A value in a chart's unit: count, seconds, ms, ratio, bytes, mib, cores. */
export function formatValue(v, unit) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  switch (unit) {
    case "seconds": return seconds(v);
    case "ms": return seconds(v / 1000);
    case "ratio": return `${trim(v * 100, Math.abs(v) < 0.1 ? 1 : 0)}%`;
    case "bytes": return bytes(v);
    case "mib": return bytes(v * 1048576);
    case "per_s": return `${count(v)}/s`;
    case "cores": return `${trim(v, Math.abs(v) < 1 ? 3 : 2)} ${v === 1 ? "core" : "cores"}`;
    default: return count(v);
  }
}

export function clock(ms, withSeconds = false) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${withSeconds ? `:${pad(d.getSeconds())}` : ""}`;
}

export function day(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** A time axis label: the clock within a day, the date and hour across days. */
export function axisTime(ms, spanMs) {
  if (spanMs <= 24 * 3600e3) return clock(ms);
  const d = new Date(ms);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}h`;
}

export function dateTime(ms) {
  return `${day(ms)} ${clock(ms, true)}`;
}

/** A log timestamp (decimal epoch nanoseconds) as local time to the microsecond. */
export function logTime(ns) {
  const n = BigInt(ns);
  const ms = Number(n / 1000000n);
  const us = Number((n / 1000n) % 1000000n);
  return `${dateTime(ms)}.${pad(us, 6)}`;
}

export function isoTime(ns) {
  return new Date(Number(BigInt(ns) / 1000000n)).toISOString();
}
