// The probe: one call per sync attempt, the same contract and behaviour as
// the Rust probe (client-probe/src, README "Instrumenting your app").
//
// - On the caller's path, `start` + `succeed` read two clocks and push onto
//   an array; a timer (once per burst) turns the inbox into events (UUIDv7
//   ids, device fields, sampling) and writes them to the buffer in one
//   IndexedDB transaction. No IndexedDB call on the caller's path.
// - Uploads go in batches, gzip where `CompressionStream` exists, one
//   uploader at a time across the tabs and the service worker of the app
//   (a Web Lock, or a lease in the shared state where Web Locks are
//   missing), so no two send the same event; events leave the buffer only
//   after a 2xx, and a resend after a lost answer is recognized by its
//   event id. Failures back off exponentially with full jitter, never
//   sooner than `Retry-After`, with the wait shared by every tab.
// - Nothing is uploaded while the browser says it is offline; coming back
//   online uploads at once. When the page is hidden the probe uploads; when
//   it goes away (`pagehide`), what is not yet in IndexedDB leaves in a
//   final `fetch(keepalive)` within its 64 KB limit, with the key in the
//   query and a `text/plain` body: the one kind of request a closing page
//   may send without a preflight.

import { Idb, Mem, bump, fresh, type Meta, type Store } from "./store";
import type { ConflictDetail, ConflictKind, ConflictResolution, Details, ErrorKind, Network, ProbeOptions, ProbeStats, SyncEvent, Trigger } from "./types";
import { addConflict, backoff, bound, cut, retryAfter, uuidv7, type Rec } from "./util";

/**
 * An attempt not yet made an event: [ok, occurred ms, duration ms, type, trigger, details, kind, message,
 * conflict details, dimensions, queue depth, oldest change ms] or a whole event. The queue is read when
 * the attempt ends, as the Rust probe reads it.
 */
type Raw =
  | [boolean, number, number, string, string, Details | undefined, ErrorKind | undefined, string | undefined, ConflictDetail[]?, Record<string, string>?, number?, number?]
  | Partial<SyncEvent>;

/** fetch(keepalive) bodies are capped at 64 KiB per page; some room left for headers. */
const KEEPALIVE_BYTES = 60_000;

const g = globalThis as any;

export class Attempt {
  private t = performance.now();
  private at = Date.now();
  private done = false;
  private c?: ConflictDetail[];
  private d?: Record<string, string>;

  constructor(
    private p: Probe,
    private type: string,
    private trigger: string,
  ) {}

  /**
   * Reports `count` conflicts on `entity` (a table or record type, cut to 64 characters), met as
   * `kind` and settled as `resolution`; calls for the same three add up, and the event's
   * `conflicts` is at least their total (past 32 entries the smallest fold into `other`).
   */
  conflict(entity: string, kind: ConflictKind, resolution: ConflictResolution, count = 1): this {
    // One past the bound, so the timer still sees (and counts) the cut.
    if (!this.done) addConflict((this.c ||= []), { entity, kind, resolution, count }, 65);
    return this;
  }

  /** A custom dimension for this attempt only, over the probe's `dimensions`. */
  dimension(key: string, value: string): this {
    if (!this.done) (this.d ||= {})[key] = cut(String(value), 65);
    return this;
  }

  succeed(details?: Details) {
    this.end([true, this.at, performance.now() - this.t, this.type, this.trigger, details, undefined, undefined]);
  }

  fail(kind: ErrorKind, message?: string, details?: Details) {
    this.end([false, this.at, performance.now() - this.t, this.type, this.trigger, details, kind, message]);
  }

  private end(raw: Raw) {
    // A second call changes nothing: one attempt, one event.
    if (!this.done) (this.done = true), this.p.push(raw, this.c, this.d);
  }
}

export class Probe {
  private o: Required<Omit<ProbeOptions, "osVersion" | "deviceModel" | "indexedDB" | "dimensions">> & ProbeOptions;
  private st: Store;
  private inbox: Raw[] = [];
  /** Events made but not yet in the buffer: what a closing page sends in its final request. */
  private unsaved: Rec[] = [];
  /** Of those, the ones no write has taken yet. */
  private made: Rec[] = [];
  private meta?: Meta;
  private ready: Promise<void>;
  private s: ProbeStats;
  private queue = 0;
  /** The oldest pending change, epoch ms. */
  private oldest?: number;
  /** The configured dimensions, checked once. */
  private dims: Record<string, string> = {};
  private batch: number;
  private due = false;
  private timer?: ReturnType<typeof setTimeout>;
  private busy?: Promise<boolean>;
  private closed = false;
  private id = uuidv7();
  private off: (() => void)[] = [];

  constructor(options: ProbeOptions) {
    this.o = {
      os: "web",
      sampleRate: 1,
      uploadInterval: 30_000,
      batchSize: 500,
      maxEvents: 10_000,
      maxBytes: 5_000_000,
      maxAge: 7 * 86_400_000,
      minBackoff: 1000,
      maxBackoff: 300_000,
      dbName: "synchealth",
      ...options,
      endpoint: options.endpoint.replace(/\/+$/, ""),
    };
    this.batch = this.o.batchSize;
    const f = options.indexedDB === false ? undefined : options.indexedDB || g.indexedDB;
    this.st = f ? new Idb(f, this.o.dbName, () => this.knownId() || uuidv7()) : new Mem(uuidv7());
    this.s = {
      recorded: 0,
      sampled_out: 0,
      restored: 0,
      uploaded: 0,
      duplicates: 0,
      thinned: 0,
      dropped: {},
      buffered: 0,
      upload_failures: 0,
      adjusted: {},
      storage: this.st.kind,
    };
    const checked = { occurred_at: "", duration_ms: 0 } as SyncEvent;
    bound(checked, {}, options.dimensions, this.s.adjusted);
    this.dims = checked.dimensions || {};
    this.ready = this.init();
    this.on(g, "online", () => this.kick(0));
    if (g.document) {
      this.on(g.document, "visibilitychange", () => g.document.visibilityState == "hidden" && this.flush());
      this.on(g, "pagehide", () => this.last());
    }
  }

  private on(t: any, name: string, f: () => void) {
    // Guarded: not every global is an event target (node, some workers).
    t.addEventListener?.(name, f);
    this.off.push(() => t.removeEventListener?.(name, f));
  }

  private async init() {
    try {
      // A write: the first start makes and keeps the device id.
      this.meta = await this.st.update(() => {});
      this.remember(this.meta.id);
      this.s.restored = this.s.buffered = (await this.st.peek(this.o.maxEvents + 1)).length;
    } catch {
      // No IndexedDB after all (private mode, a browser setting, a broken profile).
      this.st = new Mem(uuidv7());
      this.s.storage = this.st.kind;
      this.meta = await this.st.update();
    }
    this.kick(this.s.buffered ? 0 : this.o.uploadInterval);
  }

  /** Starts timing one sync attempt (`push`, `pull`, ...) with what set it off. */
  start(syncType: string, trigger: Trigger | string): Attempt {
    return new Attempt(this, syncType, trigger);
  }

  /** Records an attempt timed by the app; missing device fields, id and `last_success_at` are filled in. */
  record(event: Partial<SyncEvent>) {
    this.push({ ...event });
  }

  /** Times `fn` as one attempt: it succeeds when `fn` resolves and fails (`errorKind`) when it throws. */
  async track<T>(syncType: string, trigger: Trigger | string, fn: () => T | Promise<T>, errorKind: ErrorKind = "unknown"): Promise<T> {
    const a = this.start(syncType, trigger);
    try {
      const out = await fn();
      a.succeed();
      return out;
    } catch (e) {
      a.fail(errorKind, String((e as Error)?.message ?? e).slice(0, 1024));
      throw e;
    }
  }

  /**
   * The app's queue of unsynced local changes, sent with the next attempts, and when the oldest
   * of them was made (a `Date` or epoch ms; left out, it stays as last set). An empty queue
   * sends no oldest time.
   */
  setQueueDepth(n: number, oldestAt?: Date | number | null) {
    this.queue = n;
    if (oldestAt !== undefined) this.oldest = oldestAt === null ? undefined : +oldestAt;
  }

  /** @internal */
  push(raw: Raw, conflicts?: ConflictDetail[], dims?: Record<string, string>) {
    if (this.closed) return;
    if (Array.isArray(raw)) raw.push(conflicts, dims, this.queue, this.oldest);
    this.inbox.push(raw);
    this.s.recorded++;
    if (!this.due) (this.due = true), setTimeout(() => this.save(), 0);
  }

  stats(): ProbeStats {
    return { ...this.s, dropped: { ...this.s.dropped }, adjusted: { ...this.s.adjusted } };
  }

  private network(): Network {
    const n = g.navigator;
    if (n?.onLine === false) return "offline";
    const t = n?.connection?.type;
    return t == "wifi" || t == "cellular" || t == "ethernet" ? t : "unknown";
  }

  /** Turns the inbox into events (synchronous, so a closing page can send them). */
  private make(): Rec[] {
    const m = this.meta;
    if (!m) return [];
    const o = this.o;
    const out: Rec[] = [];
    for (const raw of this.inbox.splice(0)) {
      let e: Partial<SyncEvent>;
      let own: Record<string, string> | undefined;
      if (Array.isArray(raw)) {
        const [success, at, ms, sync_type, trigger, d, error_kind, error_message, conflicts, dims, queue, oldest] = raw;
        e = { occurred_at: new Date(at).toISOString(), success, duration_ms: Math.max(0, Math.round(ms)), sync_type };
        e.trigger = trigger as Trigger;
        e.queue_depth = queue;
        const t = new Date(oldest ?? NaN);
        if (!isNaN(+t)) e.queue_oldest_at = t.toISOString();
        Object.assign(e, d);
        if (conflicts) e.conflict_details = conflicts;
        own = dims;
        if (!success) (e.error_kind = error_kind), error_message && (e.error_message = error_message);
      } else (e = raw), (own = raw.dimensions);
      if (e.success && o.sampleRate < 1 && !e.sample_rate) {
        if (Math.random() >= o.sampleRate) {
          this.s.sampled_out++;
          continue;
        }
        e.sample_rate = o.sampleRate;
      }
      const ev = {
        event_id: uuidv7(),
        device_id: m.id,
        app_version: o.appVersion,
        os: o.os,
        network: this.network(),
        ...(o.osVersion && { os_version: o.osVersion }),
        ...(o.deviceModel && { device_model: o.deviceModel }),
        ...e,
      } as SyncEvent;
      bound(ev, this.dims, own, this.s.adjusted);
      out.push({ k: ev.event_id, e: ev, b: JSON.stringify(ev).length });
    }
    this.unsaved.push(...out);
    this.made.push(...out);
    return out;
  }

  private async save() {
    this.due = false;
    await this.ready;
    this.make();
    const recs = this.made.splice(0);
    if (!recs.length) return;
    try {
      const added = await this.st.add(recs, this.o);
      this.s.thinned += added.thinned;
      bump(this.s.dropped, "buffer_full", added.full);
      this.s.buffered = added.count;
      this.meta = await this.st.update();
      if (added.count >= this.batch) this.kick(0);
    } catch {
      // IndexedDB failed mid-life (quota, a cleared profile): memory from here on.
      if (this.st.kind != "memory") {
        this.st = new Mem(this.meta!.id);
        this.s.storage = this.st.kind;
        await this.st.add(recs, this.o);
        this.s.buffered += recs.length;
      }
    } finally {
      const done = new Set(recs);
      this.unsaved = this.unsaved.filter((r) => !done.has(r));
    }
  }

  private kick(ms: number) {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.upload(), ms);
  }

  private async upload(): Promise<boolean> {
    if (this.busy) return this.busy;
    this.busy = (async () => {
      await this.ready;
      let next = this.o.uploadInterval;
      let drained = false;
      try {
        while (g.navigator?.onLine !== false) {
          const r = await this.locked(() => this.once());
          if (r === true) continue;
          drained = r === false;
          if (typeof r == "number") next = r;
          break;
        }
      } catch {
        // The buffer failed under the upload: try again at the next tick.
      }
      this.kick(drained ? this.o.uploadInterval : next);
      return drained;
    })();
    try {
      return await this.busy;
    } finally {
      this.busy = undefined;
    }
  }

  /** `fn` with the app's one upload right: a Web Lock, else a lease in the shared state. */
  private async locked<T>(fn: () => Promise<T>): Promise<T | number> {
    if (this.st.kind == "memory") return fn();
    const locks = g.navigator?.locks;
    if (locks) return locks.request("synchealth:" + this.o.dbName, fn);
    const now = Date.now();
    let mine = false;
    await this.st.update((m) => {
      if (!m.lo || m.lo == this.id || (m.lu || 0) < now) (m.lo = this.id), (m.lu = now + 60_000), (mine = true);
    });
    if (!mine) return 1000;
    try {
      return await fn();
    } finally {
      await this.st.update((m) => m.lo == this.id && (m.lu = 0));
    }
  }

  /** One batch: true = sent, more may wait; false = buffer empty; a number = wait that long. */
  private async once(): Promise<boolean | number> {
    const st = this.st;
    let m = await st.update();
    const now = Date.now();
    if (now < m.nb) return m.nb - now;
    let recs = await st.peek(this.batch);
    const old = recs.filter((r) => Date.parse(r.e.occurred_at) < now - this.o.maxAge);
    if (old.length) {
      await st.remove(old, "expired");
      bump(this.s.dropped, "expired", old.length);
      recs = recs.filter((r) => !old.includes(r));
      // The report in this batch counts them already.
      m = await st.update();
    }
    this.meta = m;
    if (!recs.length) return !!old.length;
    const answer = await this.send(recs.map((r) => r.e), m);
    if ("accepted" in answer) {
      const rejected = answer.rejected?.length || 0;
      this.s.buffered = await st.remove(recs, undefined, true);
      if (rejected) await st.update((m) => bump(m.d, "rejected", rejected));
      bump(this.s.dropped, "rejected", rejected);
      this.s.uploaded += recs.length - rejected;
      this.s.duplicates += answer.duplicates || 0;
      return recs.length >= this.batch;
    }
    if (answer.status == 413 && this.batch > 1) {
      this.batch = Math.ceil(this.batch / 2);
      return true;
    }
    if (answer.status == 400 || answer.status == 413) {
      // Retrying the same bytes cannot succeed, and would block every later event.
      this.s.buffered = await st.remove(recs, "rejected");
      bump(this.s.dropped, "rejected", recs.length);
      return true;
    }
    this.s.upload_failures++;
    const o = this.o;
    const auth = answer.status == 401 || answer.status == 403;
    const wait = auth ? o.maxBackoff : backoff(m.f, o.minBackoff, o.maxBackoff, answer.after);
    await st.update((m) => {
      m.f++;
      m.nb = Date.now() + wait;
    });
    return wait;
  }

  private body(events: SyncEvent[], m: Meta) {
    const loss = Object.keys(m.d).length ? { device_id: m.id, dropped: m.d } : undefined;
    return JSON.stringify({ sent_at: new Date().toISOString(), events, telemetry_loss: loss });
  }

  private async send(events: SyncEvent[], m: Meta): Promise<any> {
    let body: BodyInit = this.body(events, m);
    const headers: Record<string, string> = {
      authorization: "Bearer " + this.o.ingestKey,
      "content-type": "application/json",
    };
    if (g.CompressionStream) {
      body = await new Response(new Blob([body]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
      headers["content-encoding"] = "gzip";
    }
    const abort = new AbortController();
    const t = setTimeout(() => abort.abort(), 30_000);
    try {
      const r = await fetch(this.o.endpoint + "/v1/events", { method: "POST", headers, body, signal: abort.signal });
      if (r.ok) return await r.json().catch(() => ({ accepted: events.length }));
      return { status: r.status, after: retryAfter(r.headers.get("retry-after")) };
    } catch {
      // Offline, refused, CORS, timed out: all are "try again later".
      return { status: 0 };
    } finally {
      clearTimeout(t);
    }
  }

  /** The device id mirrored in localStorage (pages only), for a page closing before IndexedDB opens. */
  private knownId(): string | undefined {
    try {
      return g.localStorage?.getItem(this.o.dbName + ".device") || undefined;
    } catch {}
  }

  private remember(id: string) {
    try {
      g.localStorage?.setItem(this.o.dbName + ".device", id);
    } catch {}
  }

  /** The page is going away: what is not in IndexedDB yet leaves now, within the keepalive limit. */
  private last() {
    if (!this.meta && this.st instanceof Idb) {
      // IndexedDB not open yet (a tab closed right after it started, or a
      // slow disk): without a device id nothing could leave, and the pending
      // write will not finish. The id IndexedDB keeps is the one mirrored
      // here (made now if there is none, and taken by IndexedDB then).
      const id = this.knownId() || uuidv7();
      this.remember(id);
      this.meta = fresh(id);
    }
    const m = this.meta;
    if (!m) return;
    this.make();
    const mem = this.st instanceof Mem ? this.st : undefined;
    // In memory, everything buffered dies with the page; in IndexedDB only
    // what the pending write may not finish (the rest waits for the next visit).
    const pending = mem ? [...mem.recs, ...this.unsaved] : this.unsaved;
    const sent: SyncEvent[] = [];
    let size = 200;
    for (const r of pending) {
      if (size + r.b + 1 > KEEPALIVE_BYTES) break;
      size += r.b + 1;
      sent.push(r.e);
    }
    if (mem) {
      // What does not fit is lost: counted, and reported in this very request.
      bump(m.d, "page_closed", pending.length - sent.length);
      bump(this.s.dropped, "page_closed", pending.length - sent.length);
      mem.recs = [];
      this.unsaved = [];
      this.made = [];
    } else this.save();
    if (!sent.length) return;
    const url = this.o.endpoint + "/v1/events?ingest_key=" + encodeURIComponent(this.o.ingestKey);
    const body = this.body(sent, m);
    try {
      fetch(url, { method: "POST", body, keepalive: true, headers: { "content-type": "text/plain" } }).catch(() => {});
    } catch {
      g.navigator?.sendBeacon?.(url, new Blob([body], { type: "text/plain" }));
    }
  }

  /** Saves and uploads everything recorded so far; true when the buffer is empty. */
  async flush(): Promise<boolean> {
    await this.save();
    // A pass already under way may have started before these events were saved.
    while (this.busy) await this.busy.catch(() => {});
    return this.upload();
  }

  /** Flushes, then stops: later attempts are ignored. */
  async shutdown(): Promise<boolean> {
    const ok = await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
    this.off.forEach((f) => f());
    return ok;
  }
}
