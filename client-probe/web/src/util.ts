// Small pieces without state: event ids, backoff, and thinning (the same
// rules as client-probe/src/buffer and upload/backoff.rs).

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
  e: import("./types").SyncEvent;
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
