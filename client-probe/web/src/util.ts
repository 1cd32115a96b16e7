// Small pieces without state: event ids, backoff, thinning, and bounding
// what the app hands over to the contract (the same rules as
// client-probe/src/buffer, upload/backoff.rs and bounds.rs).

import type { ConflictDetail, SyncEvent } from "./types";

const hex = (b: Uint8Array, from: number, to: number): string => {
  let s = "";
  for (let i = from; i < to; i++) s += (b[i] | 0x100).toString(16).slice(1);
  return s;
};

let last = 0;
let seq = 0;

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter within the
 * millisecond (its method 1), then random bits. Ids made here sort in the order
 * they were made, which is the buffer's order (its key) and so the upload order.
 */
export function uuidv7(now = Date.now()): string {
  if (now <= last) {
    now = last;
    if (++seq > 0xfff) (now = ++last), (seq = 0);
  } else (last = now), (seq = 0);
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  for (let i = 5; i >= 0; i--) {
    b[i] = now % 256;
    now = Math.floor(now / 256);
  }
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = (b[8] & 0x3f) | 0x80;
  return `${hex(b, 0, 4)}-${hex(b, 4, 6)}-${hex(b, 6, 8)}-${hex(b, 8, 10)}-${hex(b, 10, 16)}`;
}

/** The longest `Retry-After` honoured (ms): a misconfigured server must not silence a probe for days. */
const MAX_RETRY_AFTER = 3_600_000;

/**
 * The wait after `failures` failures in a row: `uniform(0, min(max, min * 2^failures))`
 * (full jitter, so a fleet that failed together does not retry together), never
 * less than the collector's `Retry-After` (ms).
 */
export function backoff(failures: number, min: number, max: number, retryAfter?: number): number {
  const cap = Math.min(max, min * 2 ** Math.min(failures, 20));
  const wait = cap * Math.random();
  return retryAfter === undefined ? wait : Math.max(wait, Math.min(retryAfter, MAX_RETRY_AFTER));
}

/** `Retry-After` in delta-seconds (what the collector sends), as ms; dates count as absent. */
export function retryAfter(value: string | null): number | undefined {
  const s = value === null ? NaN : Number(value.trim());
  return Number.isInteger(s) && s >= 0 ? s * 1000 : undefined;
}

/** The contract's smallest `sample_rate`: a success is never thinned below it. */
export const MIN_RATE = 0.001;

/** A buffered event: its id (the key, time-ordered), the event, and its size in bytes. */
export interface Rec {
  k: string;
  e: SyncEvent;
  b: number;
}

export interface Room {
  /** Keys to delete. */
  drop: string[];
  /** Records whose `sample_rate` was halved: to write back. */
  keep: Rec[];
  thinned: number;
  full: number;
}

/**
 * Brings `recs` (oldest first) down to 80 % of the bounds, as the Rust probe does:
 * thin successes (of every two, drop one and halve the other's rate, so success
 * rates and percentiles stay unbiased) while any can be thinned; then drop the
 * oldest successes, then the oldest failures. Mutates the kept records' rates.
 */
export function makeRoom(recs: Rec[], maxEvents: number, maxBytes: number): Room {
  const te = Math.floor((maxEvents * 4) / 5);
  const tb = Math.floor((maxBytes * 4) / 5);
  let live = recs.slice();
  let bytes = live.reduce((n, r) => n + r.b, 0);
  const room: Room = { drop: [], keep: [], thinned: 0, full: 0 };
  const halved = new Set<Rec>();
  const over = () => live.length > te || bytes > tb;
  let phase = false;
  while (over()) {
    let keepNext = phase;
    phase = !phase;
    let n = 0;
    live = live.filter((r) => {
      const rate = r.e.sample_rate ?? 1;
      if (!r.e.success || rate / 2 < MIN_RATE) return true;
      keepNext = !keepNext;
      if (keepNext) {
        r.e.sample_rate = rate / 2;
        halved.add(r);
        return true;
      }
      n++;
      bytes -= r.b;
      room.drop.push(r.k);
      halved.delete(r);
      return false;
    });
    if (!n) break;
    room.thinned += n;
  }
  for (const success of [true, false]) {
    for (let i = 0; over() && i < live.length; ) {
      const r = live[i];
      if (r.e.success !== success) {
        i++;
        continue;
      }
      live.splice(i, 1);
      bytes -= r.b;
      room.drop.push(r.k);
      halved.delete(r);
      room.full++;
    }
  }
  room.keep = [...halved];
  return room;
}

/** The contract's bounds (schema/src/event.rs). */
const MAX_DETAILS = 32;
const MAX_ENTITY = 64;
const MAX_DIMENSIONS = 8;
const MAX_VALUE = 64;
const KEY = /^[a-z][a-z0-9_]{0,31}$/;
/** The collector's earliest time, 2000-01-01. */
const EARLIEST = 946_684_800_000;

/** `s` cut to `n` characters (code points, as the collector counts them). */
export const cut = (s: string, n: number): string => {
  const c = Array.from(s);
  return c.length > n ? c.slice(0, n).join("") : s;
};

/**
 * Adds conflicts to `into`, merging an entry of the same entity, kind and resolution;
 * an empty entity is `unknown`, a count below 1 adds nothing.
 */
export function addConflict(into: ConflictDetail[], d: ConflictDetail, max = MAX_ENTITY): void {
  const count = Math.floor(d.count);
  if (!(count >= 1)) return;
  const entity = cut(String(d.entity || "unknown"), max);
  const same = into.find((x) => x.entity == entity && x.kind == d.kind && x.resolution == d.resolution);
  if (same) same.count += count;
  else into.push({ entity, kind: d.kind, resolution: d.resolution, count });
}

/**
 * Brings an event within the contract, as the Rust probe does (client-probe/src/bounds.rs),
 * counting each change in `adjusted`: entities cut to 64 characters and equal entries merged;
 * past 32 entries the 31 largest kept and the rest folded into one of entity `other` (the kind
 * and resolution most of them had), so no conflict is lost; `conflicts` raised to their sum;
 * `queue_oldest_at` only with a queue, from 2000 on, at most the attempt's end; dimensions
 * over the configured ones, invalid keys and empty values dropped, values cut to 64, 8 at most.
 */
export function bound(e: SyncEvent, configured: Record<string, string>, own: Record<string, string> | undefined, adjusted: Record<string, number>): void {
  const note = (reason: string) => bump(adjusted, reason, 1);
  if (e.conflict_details?.length) {
    let merged: ConflictDetail[] = [];
    for (const d of e.conflict_details) {
      const n = Array.from(String(d.entity ?? "")).length;
      if (!n) note("entity_empty");
      else if (n > MAX_ENTITY) note("entity_truncated");
      if (!(d.count >= 1)) note("conflict_count_zero");
      addConflict(merged, d);
    }
    if (merged.length > MAX_DETAILS) {
      note("conflict_details_folded");
      merged.sort((a, b) => b.count - a.count || (a.entity < b.entity ? -1 : a.entity > b.entity ? 1 : 0));
      const rest = merged.splice(MAX_DETAILS - 1);
      const top = (key: "kind" | "resolution") => {
        const by: Record<string, number> = {};
        for (const d of rest) by[d[key]] = (by[d[key]] || 0) + d.count;
        return Object.keys(by).reduce((a, b) => (by[b] > by[a] ? b : a));
      };
      addConflict(merged, { entity: "other", kind: top("kind") as any, resolution: top("resolution") as any, count: rest.reduce((n, d) => n + d.count, 0) });
    }
    const total = merged.reduce((n, d) => n + d.count, 0);
    if ((e.conflicts ?? 0) < total) {
      if (e.conflicts) note("conflicts_raised");
      e.conflicts = total;
    }
    e.conflict_details = merged;
  } else delete e.conflict_details;
  if (e.queue_oldest_at !== undefined) {
    const t = Date.parse(e.queue_oldest_at);
    const end = Date.parse(e.occurred_at) + e.duration_ms;
    if (!e.queue_depth) delete e.queue_oldest_at;
    else if (!(t >= EARLIEST)) note("queue_oldest_at_out_of_range"), delete e.queue_oldest_at;
    else if (t > end) note("queue_oldest_at_after_attempt"), (e.queue_oldest_at = new Date(end).toISOString());
  }
  const dims: Record<string, string> = { ...configured };
  for (const [k, v] of Object.entries(own || {})) {
    const value = String(v ?? "");
    if (!KEY.test(k)) note("dimension_key_invalid");
    else if (!value) note("dimension_value_empty");
    else if (!(k in dims) && Object.keys(dims).length >= MAX_DIMENSIONS) note("too_many_dimensions");
    else {
      if (Array.from(value).length > MAX_VALUE) note("dimension_value_truncated");
      dims[k] = cut(value, MAX_VALUE);
    }
  }
  if (Object.keys(dims).length) e.dimensions = dims;
  else delete e.dimensions;
}

/** Adds `n` to a tally (drops, adjustments) for `reason`. */
export function bump(counts: Record<string, number>, reason: string, n: number) {
  if (n) counts[reason] = (counts[reason] || 0) + n;
}
