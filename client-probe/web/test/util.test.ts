// The stateless rules: ids, backoff, thinning (as client-probe/src/buffer/tests.rs).
import { describe, expect, it } from "vitest";
import { backoff, makeRoom, retryAfter, uuidv7, type Rec } from "../src/util";

const rec = (i: number, success: boolean): Rec => ({
  k: String(i).padStart(5, "0"),
  e: { event_id: "", device_id: "d", occurred_at: "", success, duration_ms: 1, app_version: "1", os: "web" },
  b: 100,
});

describe("uuidv7", () => {
  it("is a version 7 variant 1 UUID whose order is the order of time", () => {
    const a = uuidv7(1_700_000_000_000);
    const b = uuidv7(1_700_000_000_001);
    expect(uuidv7(1_700_000_000_000) > b).toBe(true); // a clock going back never reorders
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a < b).toBe(true);
    expect(a.slice(0, 13).replace("-", "")).toBe((1_700_000_000_000).toString(16).padStart(12, "0"));
    const many = Array.from({ length: 5000 }, () => uuidv7());
    expect(new Set(many).size).toBe(5000);
    // Made in one millisecond or not, they sort in the order they were made.
    expect([...many].sort()).toEqual(many);
  });
});

describe("backoff", () => {
  it("waits between zero and the doubling cap, never past the maximum", () => {
    for (let f = 0; f < 30; f++) {
      const w = backoff(f, 1000, 300_000);
      expect(w).toBeGreaterThanOrEqual(0);
      expect(w).toBeLessThanOrEqual(Math.min(300_000, 1000 * 2 ** f));
    }
  });
  it("never retries sooner than Retry-After, and caps a silly one at an hour", () => {
    for (let i = 0; i < 100; i++) expect(backoff(0, 1000, 300_000, 5000)).toBeGreaterThanOrEqual(5000);
    expect(backoff(0, 1000, 300_000, 10 * 86_400_000)).toBeLessThanOrEqual(3_600_000);
    expect(retryAfter("3")).toBe(3000);
    expect(retryAfter("Wed, 21 Oct 2015 07:28:00 GMT")).toBeUndefined();
    expect(retryAfter(null)).toBeUndefined();
  });
});

describe("makeRoom", () => {
  it("thins successes with their weight raised before touching a failure", () => {
    const recs = [...Array.from({ length: 80 }, (_, i) => rec(i, true)), ...Array.from({ length: 20 }, (_, i) => rec(100 + i, false))];
    const room = makeRoom(recs, 90, 1e9);
    const dropped = new Set(room.drop);
    const kept = recs.filter((r) => !dropped.has(r.k));
    expect(kept.length).toBeLessThanOrEqual(72);
    expect(kept.filter((r) => !r.e.success).length).toBe(20);
    expect(room.full).toBe(0);
    // The weight is kept: the successes still stand for 80 attempts.
    const weight = kept.filter((r) => r.e.success).reduce((n, r) => n + 1 / (r.e.sample_rate ?? 1), 0);
    expect(weight).toBe(80);
    expect(room.thinned).toBe(80 - kept.filter((r) => r.e.success).length);
  });
  it("drops the oldest successes, then the oldest failures, when thinning is not enough", () => {
    const failures = Array.from({ length: 50 }, (_, i) => rec(i, false));
    const room = makeRoom(failures, 10, 1e9);
    expect(room.full).toBe(42);
    expect(room.drop).toEqual(failures.slice(0, 42).map((r) => r.k));
    const mixed = [rec(0, true), rec(1, false), rec(2, false)];
    mixed[0].e.sample_rate = 0.001;
    expect(makeRoom(mixed, 2, 1e9).drop).toEqual(["00000", "00001"]);
  });
  it("keeps the byte bound too", () => {
    const recs = Array.from({ length: 10 }, (_, i) => rec(i, false));
    const room = makeRoom(recs, 1000, 500);
    expect(10 - room.drop.length).toBe(4);
  });
});
