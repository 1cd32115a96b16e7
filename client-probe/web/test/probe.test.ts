// The probe over a fake IndexedDB (fake-indexeddb) and a fake fetch: what it
// sends, what it keeps, how it waits. The real browser and collector are e2e/.
import { IDBFactory } from "fake-indexeddb";
import { gunzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Probe, type ProbeOptions, type ProbeStats } from "../src/index";

interface Call {
  at: number;
  url: string;
  headers: Record<string, string>;
  body: any;
}

/** A fake collector: stores event ids once, answers `script`'s statuses first, then 200. */
function collector(script: { status: number; retryAfter?: string }[] = []) {
  const calls: Call[] = [];
  const stored = new Set<string>();
  const fetch = vi.fn(async (url: string, init: RequestInit) => {
    const headers = init.headers as Record<string, string>;
    const raw = init.body instanceof ArrayBuffer ? gunzipSync(Buffer.from(init.body)).toString() : String(init.body);
    const body = JSON.parse(raw);
    calls.push({ at: Date.now(), url, headers, body });
    const next = script.shift();
    if (next) {
      const h = new Headers(next.retryAfter ? { "retry-after": next.retryAfter } : {});
      return new Response("{}", { status: next.status, headers: h });
    }
    let accepted = 0;
    let duplicates = 0;
    for (const e of body.events) stored.has(e.event_id) ? duplicates++ : (stored.add(e.event_id), accepted++);
    return new Response(JSON.stringify({ accepted, duplicates, rejected: [] }), { status: 200 });
  });
  vi.stubGlobal("fetch", fetch);
  return { calls, stored };
}

const options = (db: IDBFactory | false, extra: Partial<ProbeOptions> = {}): ProbeOptions => ({
  endpoint: "http://collector.test/",
  ingestKey: "shk_test",
  appVersion: "1.2.3",
  indexedDB: db,
  uploadInterval: 60_000,
  ...extra,
});

const balanced = (s: ProbeStats) =>
  s.restored + s.recorded ===
  s.uploaded + s.thinned + s.sampled_out + Object.values(s.dropped).reduce((a, b) => a + b, 0) + s.buffered;

let probes: Probe[] = [];
const make = (o: ProbeOptions) => {
  const p = new Probe(o);
  probes.push(p);
  return p;
};
beforeEach(() => (probes = []));
afterEach(async () => {
  for (const p of probes) await p.shutdown().catch(() => {});
  vi.unstubAllGlobals();
});

describe("Probe", () => {
  it("sends each attempt once, gzip, with the key, device fields and last_success_at", async () => {
    const c = collector();
    const p = make(options(new IDBFactory()));
    p.start("push", "local_write").succeed({ records_up: 3 });
    p.start("pull", "scheduled").fail("network", "offline", { retries: 2 });
    p.start("push", "user").succeed();
    expect(await p.flush()).toBe(true);
    expect(c.calls).toHaveLength(1);
    const { headers, body, url } = c.calls[0];
    expect(url).toBe("http://collector.test/v1/events");
    expect(headers).toMatchObject({ authorization: "Bearer shk_test", "content-encoding": "gzip" });
    expect(Date.parse(body.sent_at)).toBeGreaterThan(0);
    const [a, b, d] = body.events;
    expect(a).toMatchObject({ success: true, sync_type: "push", trigger: "local_write", records_up: 3, os: "web", app_version: "1.2.3", last_success_at: null });
    expect(b).toMatchObject({ success: false, error_kind: "network", error_message: "offline", retries: 2, last_success_at: a.occurred_at });
    expect(d.last_success_at).toBe(a.occurred_at);
    expect(new Set([a.device_id, b.device_id, d.device_id]).size).toBe(1);
    expect(c.stored.size).toBe(3);
    const s = p.stats();
    expect([s.recorded, s.uploaded, s.buffered, s.duplicates]).toEqual([3, 3, 0, 0]);
    expect(balanced(s)).toBe(true);
  });

  it("sends conflict details, the queue's oldest change and dimensions, bounded to the contract", async () => {
    const c = collector();
    const p = make(options(new IDBFactory(), { dimensions: { engine: "powersync", plan: "free", "Bad Key": "x" } }));
    const oldest = Date.now() - 300_000;
    p.setQueueDepth(3, new Date(oldest));
    const a = p.start("push", "local_write");
    a.conflict("todo", "update_update", "last_write_wins", 2).conflict("todo", "update_update", "last_write_wins");
    a.conflict("é".repeat(80), "constraint", "manual").dimension("plan", "pro").dimension("region", "x".repeat(100));
    a.succeed({ conflicts: 1 });
    p.setQueueDepth(0, null);
    const b = p.start("pull", "scheduled");
    for (let i = 0; i < 40; i++) b.conflict(`t${String(i).padStart(2, "0")}`, "insert_insert", i == 35 ? "server_wins" : "crdt_merge", 100 - i);
    b.succeed();
    expect(await p.flush()).toBe(true);
    const [pushed, pulled] = c.calls[0].body.events;
    expect(pushed.conflicts).toBe(4);
    expect(pushed.conflict_details).toEqual([
      { entity: "todo", kind: "update_update", resolution: "last_write_wins", count: 3 },
      { entity: "é".repeat(64), kind: "constraint", resolution: "manual", count: 1 },
    ]);
    expect(Date.parse(pushed.queue_oldest_at)).toBe(oldest);
    expect(pushed.dimensions).toEqual({ engine: "powersync", plan: "pro", region: "x".repeat(64) });
    expect(pulled.queue_oldest_at).toBeUndefined();
    expect(pulled.dimensions).toEqual({ engine: "powersync", plan: "free" });
    expect(pulled.conflict_details).toHaveLength(32);
    const total = Array.from({ length: 40 }, (_, i) => 100 - i).reduce((x, y) => x + y, 0);
    expect(pulled.conflicts).toBe(total);
    expect(pulled.conflict_details.reduce((n: number, d: any) => n + d.count, 0)).toBe(total);
    expect(pulled.conflict_details[31]).toEqual({ entity: "other", kind: "insert_insert", resolution: "crdt_merge", count: total - Array.from({ length: 31 }, (_, i) => 100 - i).reduce((x, y) => x + y, 0) });
    expect(p.stats().adjusted).toEqual({
      dimension_key_invalid: 1,
      entity_truncated: 1,
      dimension_value_truncated: 1,
      conflicts_raised: 1,
      conflict_details_folded: 1,
    });
  });

  it("bounds an app-made event too: an empty queue has no oldest time, 1970 is out of range", async () => {
    const c = collector();
    const p = make(options(false));
    const now = new Date().toISOString();
    p.record({ occurred_at: now, success: true, duration_ms: 5, queue_depth: 0, queue_oldest_at: now });
    p.record({ occurred_at: now, success: true, duration_ms: 5, queue_depth: 2, queue_oldest_at: new Date(0).toISOString(), dimensions: { "": "x", plan: "" } });
    p.record({ occurred_at: now, success: true, duration_ms: 5, queue_depth: 2, queue_oldest_at: new Date(Date.now() + 86_400_000).toISOString(), conflict_details: [{ entity: "", kind: "other", resolution: "custom", count: 0 }, { entity: "", kind: "other", resolution: "custom", count: 2 }] });
    expect(await p.flush()).toBe(true);
    const [a, b, d] = c.calls[0].body.events;
    expect(a.queue_oldest_at).toBeUndefined();
    expect(b.queue_oldest_at).toBeUndefined();
    expect(b.dimensions).toBeUndefined();
    expect(d.queue_oldest_at).toBe(new Date(Date.parse(now) + 5).toISOString());
    expect(d.conflict_details).toEqual([{ entity: "unknown", kind: "other", resolution: "custom", count: 2 }]);
    expect(d.conflicts).toBe(2);
    expect(p.stats().adjusted).toMatchObject({ queue_oldest_at_out_of_range: 1, queue_oldest_at_after_attempt: 1, dimension_key_invalid: 1, dimension_value_empty: 1, entity_empty: 2, conflict_count_zero: 1 });
  });

  it("keeps events in IndexedDB across a restart and sends them then, with the same device id", async () => {
    const db = new IDBFactory();
    const c = collector();
    vi.stubGlobal("navigator", { onLine: false });
    const first = make(options(db));
    for (let i = 0; i < 5; i++) first.start("push", "local_write").succeed();
    expect(await first.flush()).toBe(false);
    expect(await first.shutdown()).toBe(false);
    expect(first.stats()).toMatchObject({ buffered: 5, upload_failures: 0 });
    expect(c.calls).toHaveLength(0);
    vi.stubGlobal("navigator", { onLine: true });
    const second = make(options(db));
    await new Promise((r) => setTimeout(r, 20));
    expect(await second.flush()).toBe(true);
    expect(second.stats()).toMatchObject({ restored: 5, uploaded: 5, buffered: 0 });
    expect(c.stored.size).toBe(5);
    const ids = new Set(c.calls.flatMap((call) => call.body.events.map((e: any) => e.device_id)));
    expect(ids.size).toBe(1);
  });

  it("waits at least Retry-After after a 429 or 503, and backs off between", async () => {
    const c = collector([{ status: 503, retryAfter: "1" }, { status: 429, retryAfter: "1" }]);
    const p = make(options(new IDBFactory(), { minBackoff: 10, maxBackoff: 20 }));
    p.start("push", "user").succeed();
    expect(await p.flush()).toBe(false);
    const t0 = Date.now();
    // The wait is shared state: a flush right away does not send.
    expect(await p.flush()).toBe(false);
    expect(c.calls).toHaveLength(1);
    await vi.waitFor(() => expect(c.stored.size).toBe(1), { timeout: 5000, interval: 50 });
    expect(c.calls).toHaveLength(3);
    expect(c.calls[1].at - c.calls[0].at).toBeGreaterThanOrEqual(990);
    expect(c.calls[2].at - c.calls[1].at).toBeGreaterThanOrEqual(990);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(p.stats().upload_failures).toBe(2);
  });

  it("halves the batch on a 413 and drops a 400 as rejected, counted in the loss report", async () => {
    const c = collector([{ status: 413 }, { status: 400 }]);
    const p = make(options(new IDBFactory(), { batchSize: 4 }));
    for (let i = 0; i < 6; i++) p.start("push", "user").succeed();
    expect(await p.flush()).toBe(true);
    expect(c.calls.map((call) => call.body.events.length)).toEqual([4, 2, 2, 2]);
    expect(p.stats().dropped).toEqual({ rejected: 2 });
    expect(c.calls[3].body.telemetry_loss).toMatchObject({ dropped: { rejected: 2 } });
    expect(balanced(p.stats())).toBe(true);
  });

  it("thins successes first when the buffer is full, and reports what it had to drop", async () => {
    const c = collector([{ status: 503, retryAfter: "0" }]);
    const p = make(options(new IDBFactory(), { maxEvents: 20, minBackoff: 1, maxBackoff: 1 }));
    for (let i = 0; i < 30; i++) p.start("push", "user").succeed();
    for (let i = 0; i < 30; i++) p.start("push", "user").fail("server");
    expect(await p.flush()).toBe(false);
    await new Promise((r) => setTimeout(r, 10));
    expect(await p.flush()).toBe(true);
    const s = p.stats();
    expect(s.thinned).toBeGreaterThan(0);
    expect(s.dropped.buffer_full).toBeGreaterThan(0);
    expect(balanced(s)).toBe(true);
    const sent = c.calls.at(-1)!.body;
    expect(sent.telemetry_loss.dropped.buffer_full).toBe(s.dropped.buffer_full);
    const weights = [...sent.events].filter((e: any) => e.success).reduce((n: number, e: any) => n + 1 / (e.sample_rate ?? 1), 0);
    expect(weights).toBeLessThanOrEqual(30);
  });

  it("lets an event older than the buffer's age bound expire unsent, counted", async () => {
    const c = collector();
    const p = make(options(new IDBFactory()));
    p.record({ success: false, duration_ms: 1, occurred_at: new Date(Date.now() - 8 * 86_400_000).toISOString() });
    p.start("push", "user").succeed();
    expect(await p.flush()).toBe(true);
    expect(c.calls[0].body.events).toHaveLength(1);
    expect(p.stats().dropped).toEqual({ expired: 1 });
    expect(c.calls[0].body.telemetry_loss.dropped).toEqual({ expired: 1 });
  });

  it("works without IndexedDB, in memory, and says so", async () => {
    const c = collector();
    const p = make(options(false));
    await p.track("push", "user", async () => 42);
    await expect(p.track("pull", "user", async () => Promise.reject(new Error("boom")), "server")).rejects.toThrow("boom");
    expect(await p.flush()).toBe(true);
    expect(p.stats().storage).toBe("memory");
    expect(c.calls[0].body.events.map((e: any) => [e.success, e.error_kind ?? null, e.error_message ?? null])).toEqual([
      [true, null, null],
      [false, "server", "boom"],
    ]);
  });

  it("keeps only the sampled share of successes, each carrying its weight", async () => {
    collector();
    const p = make(options(new IDBFactory(), { sampleRate: 0.5 }));
    for (let i = 0; i < 200; i++) p.start("push", "user").succeed();
    p.start("push", "user").fail("server");
    expect(await p.flush()).toBe(true);
    const s = p.stats();
    expect(s.sampled_out).toBeGreaterThan(50);
    expect(s.sampled_out).toBeLessThan(150);
    expect(balanced(s)).toBe(true);
  });

  it("records app-timed events and a second end of one attempt is ignored", async () => {
    const c = collector();
    const p = make(options(new IDBFactory()));
    p.record({ success: true, duration_ms: 7, occurred_at: new Date(Date.now() - 60_000).toISOString(), sync_type: "full" });
    const a = p.start("push", "user");
    a.succeed();
    a.fail("unknown");
    expect(await p.flush()).toBe(true);
    expect(c.calls[0].body.events).toHaveLength(2);
    expect(c.calls[0].body.events[0]).toMatchObject({ duration_ms: 7, sync_type: "full", device_id: expect.any(String) });
  });
});
