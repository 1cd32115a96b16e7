// Where events wait for upload: IndexedDB, shared by every tab and the
// service worker of one origin, so nothing is lost when a tab closes, the
// browser crashes or the device stays offline for days; or memory, when
// IndexedDB is unavailable (private mode, quota), with what that costs
// counted as loss. Every change is one IndexedDB transaction over the events
// and the probe's state (`Meta`), so two tabs never see half of another's.

import { bump, makeRoom, type Rec, type Room } from "./util";

export { bump };

/** The probe's persistent state, shared by the tabs of one database. */
export interface Meta {
  /** Device id, made once. */
  id: string;
  /** The device's last successful sync (RFC 3339), or null. */
  ls: string | null;
  /** Events dropped, by reason, since the storage was made (the telemetry-loss report). */
  d: Record<string, number>;
  /** Failed uploads in a row, and no upload before this time (ms): shared, so no tab retries sooner. */
  f: number;
  nb: number;
  /** Bytes of buffered events. */
  by: number;
  /** Fallback upload lease (no Web Locks): owner and expiry. */
  lo?: string;
  lu?: number;
}

export interface Bounds {
  maxEvents: number;
  maxBytes: number;
}

export interface Added extends Room {
  count: number;
}

export interface Store {
  kind: string;
  /** Meta after `fn` changed it (read-modify-write, atomic across tabs). */
  update(fn?: (m: Meta) => void): Promise<Meta>;
  /** Stores `recs` (stamping `last_success_at`), then keeps the bounds. */
  add(recs: Rec[], b: Bounds): Promise<Added>;
  /** The oldest `n` events. */
  peek(n: number): Promise<Rec[]>;
  /** Removes `recs`, counting them as dropped for `reason` if given; `ok` resets the backoff. Returns the count left. */
  remove(recs: Rec[], reason?: string, ok?: boolean): Promise<number>;
}

export const fresh = (id: string): Meta => ({ id, ls: null, d: {}, f: 0, nb: 0, by: 0 });

const bytesOf = (recs: Rec[]) => recs.reduce((n, r) => n + r.b, 0);

const count = (m: Meta, reason: string, n: number) => bump(m.d, reason, n);

/** Sets each event's `last_success_at` from the device's last success before it, in order. */
function stamp(m: Meta, recs: Rec[]) {
  for (const r of recs) {
    if (r.e.last_success_at === undefined) r.e.last_success_at = m.ls;
    if (r.e.success && (!m.ls || r.e.occurred_at > m.ls)) m.ls = r.e.occurred_at;
  }
}

const P = <T>(r: IDBRequest<T>) =>
  new Promise<T>((ok, no) => {
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });

export class Idb implements Store {
  kind = "indexeddb";
  private db: Promise<IDBDatabase>;

  constructor(
    f: IDBFactory,
    name: string,
    private newId: () => string,
  ) {
    this.db = new Promise((ok, no) => {
      const r = f.open(name, 1);
      r.onupgradeneeded = () => {
        r.result.createObjectStore("e", { keyPath: "k" });
        r.result.createObjectStore("m");
      };
      r.onsuccess = () => ok(r.result);
      r.onerror = () => no(r.error);
      r.onblocked = () => no(new Error("blocked"));
    });
  }

  private async tx<T>(fn: (e: IDBObjectStore, m: Meta) => Promise<T> | T, write = true): Promise<T> {
    const t = (await this.db).transaction(["e", "m"], write ? "readwrite" : "readonly");
    const done = new Promise((ok, no) => {
      t.oncomplete = ok;
      t.onerror = t.onabort = () => no(t.error || new Error("abort"));
    });
    const ms = t.objectStore("m");
    try {
      // Made inside the transaction that first finds none: two tabs starting
      // at once agree on one device id.
      const m: Meta = (await P(ms.get("m"))) || fresh(this.newId());
      const out = await fn(t.objectStore("e"), m);
      if (write) ms.put(m, "m");
      await done;
      return out;
    } catch (e) {
      try {
        t.abort();
      } catch {}
      throw e;
    }
  }

  update(fn?: (m: Meta) => void) {
    return this.tx((_, m) => (fn && fn(m), m), !!fn);
  }

  add(recs: Rec[], b: Bounds) {
    return this.tx(async (e, m) => {
      stamp(m, recs);
      for (const r of recs) e.put(r);
      m.by += bytesOf(recs);
      let n = await P(e.count());
      let room: Room = { drop: [], keep: [], thinned: 0, full: 0 };
      if (n > b.maxEvents || m.by > b.maxBytes) {
        const all = await P(e.getAll() as IDBRequest<Rec[]>);
        room = makeRoom(all, b.maxEvents, b.maxBytes);
        for (const k of room.drop) e.delete(k);
        for (const r of room.keep) e.put(r);
        const dropped = new Set(room.drop);
        m.by = bytesOf(all.filter((r) => !dropped.has(r.k)));
        count(m, "buffer_full", room.full);
        n -= room.drop.length;
      }
      return { ...room, count: n };
    });
  }

  peek(n: number) {
    return this.tx((e) => P(e.getAll(null, n) as IDBRequest<Rec[]>), false);
  }

  remove(recs: Rec[], reason?: string, ok?: boolean) {
    return this.tx(async (e, m) => {
      for (const r of recs) e.delete(r.k);
      m.by = Math.max(0, m.by - bytesOf(recs));
      if (reason) count(m, reason, recs.length);
      if (ok) m.f = m.nb = 0;
      return P(e.count());
    });
  }
}

/** The same store in memory: for one page's life only. */
export class Mem implements Store {
  kind = "memory";
  m: Meta;
  recs: Rec[] = [];

  constructor(id: string) {
    this.m = fresh(id);
  }

  async update(fn?: (m: Meta) => void) {
    if (fn) fn(this.m);
    return this.m;
  }

  async add(recs: Rec[], b: Bounds) {
    stamp(this.m, recs);
    this.recs.push(...recs);
    let room: Room = { drop: [], keep: [], thinned: 0, full: 0 };
    if (this.recs.length > b.maxEvents || bytesOf(this.recs) > b.maxBytes) {
      room = makeRoom(this.recs, b.maxEvents, b.maxBytes);
      const dropped = new Set(room.drop);
      this.recs = this.recs.filter((r) => !dropped.has(r.k));
      count(this.m, "buffer_full", room.full);
    }
    return { ...room, count: this.recs.length };
  }

  async peek(n: number) {
    return this.recs.slice(0, n);
  }

  async remove(recs: Rec[], reason?: string, ok?: boolean) {
    const gone = new Set(recs.map((r) => r.k));
    this.recs = this.recs.filter((r) => !gone.has(r.k));
    if (reason) count(this.m, reason, recs.length);
    if (ok) this.m.f = this.m.nb = 0;
    return this.recs.length;
  }
}
