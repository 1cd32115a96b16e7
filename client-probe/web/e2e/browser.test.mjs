// The web probe in Debian's Chromium against a real `synchealth up`
// (harness.mjs): offline for a while, a tab closed mid-upload, two tabs at
// once, the collector pushing back with Retry-After, CORS, no IndexedDB.
// Every count is the collector's own (the JSON API), per test app version.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { collector, eventually, world } from "./harness.mjs";

let w;
before(async () => (w = await world()));
after(async () => w && (await w.close()));

/** Records `n` attempts in the page, one every `every` ms, a fifth of them failures. */
const record = (page, n, every = 0) =>
  page.evaluate(
    async ([n, every]) => {
      for (let i = 0; i < n; i++) {
        const a = window.probe.start("push", "local_write");
        i % 5 == 0 ? a.fail("network", "no route") : a.succeed({ records_up: i });
        if (every) await new Promise((r) => setTimeout(r, every));
      }
    },
    [n, every],
  );
const stats = (page) => page.evaluate(() => window.probe.stats());
const flush = (page) => page.evaluate(() => window.probe.flush());

test("200 attempts recorded offline are each stored exactly once when the page comes back online", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 300 }));
  await context.setOffline(true);
  await record(page, 200, 10);
  assert.equal(await page.evaluate(() => navigator.onLine), false);
  assert.equal(await flush(page), false, "nothing leaves while offline");
  assert.equal((await stats(page)).upload_failures, 0, "no upload is even tried offline");
  assert.equal(await w.server.events(app), 0);
  await context.setOffline(false);
  // The `online` event alone starts the upload: no flush here.
  await eventually(async () => (await w.server.events(app)) === 200);
  const s = await stats(page);
  assert.deepEqual([s.recorded, s.uploaded, s.duplicates, s.buffered, s.storage], [200, 200, 0, 0, "indexeddb"]);
  await context.close();
});

test("a tab closed mid-upload loses nothing and stores nothing twice once the page is reopened", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  let reached;
  const arrived = new Promise((ok) => (reached = ok));
  // The collector gets the batch and stores it, but the answer never comes
  // back: the tab is closed while it waits.
  await context.route("**/v1/events", async (route) => {
    if (route.request().method() !== "POST") return route.fallback();
    await route.fetch().catch(() => {});
    reached();
  });
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 60_000 }));
  await record(page, 50);
  page.evaluate(() => window.probe.flush()).catch(() => {});
  await arrived;
  await page.close();
  await context.unrouteAll({ behavior: "ignoreErrors" });
  assert.equal(await w.server.events(app), 50, "the collector stored the batch whose answer was lost");

  const again = await w.open(context, app);
  await again.evaluate(() => window.makeProbe({ uploadInterval: 60_000 }));
  assert.equal(await flush(again), true);
  const s = await stats(again);
  assert.equal(s.restored, 50, "the events were still in IndexedDB");
  assert.equal(s.uploaded, 50);
  assert.equal(s.duplicates, 50, "the collector recognized every event id");
  assert.equal(await w.server.events(app), 50);
  await context.close();
});

test("two tabs recording at once upload one at a time and send no event twice", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  let inFlight = 0;
  let most = 0;
  let posts = 0;
  context.on("request", (r) => r.method() === "POST" && r.url().includes("/v1/events") && (posts++, (most = Math.max(most, ++inFlight))));
  const done = (r) => r.method() === "POST" && r.url().includes("/v1/events") && inFlight--;
  context.on("requestfinished", done);
  context.on("requestfailed", done);
  const tabs = [await w.open(context, app), await w.open(context, app)];
  for (const tab of tabs) await tab.evaluate(() => window.makeProbe({ uploadInterval: 100, batchSize: 20 }));
  await Promise.all(tabs.map((tab) => record(tab, 100, 5)));
  await Promise.all(tabs.map(flush));
  await eventually(async () => (await w.server.events(app)) === 200);
  const [a, b] = await Promise.all(tabs.map(stats));
  assert.equal(a.duplicates + b.duplicates, 0, "no event was sent twice");
  assert.equal(a.uploaded + b.uploaded, 200);
  assert.ok(posts >= 10, `batches of 20: ${posts} posts`);
  assert.equal(most, 1, "never two uploads at once");
  await context.close();
});

test("after a 503 and a 429 with Retry-After the probe never retries sooner", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const answers = [
    { status: 503, wait: 2 },
    { status: 429, wait: 3 },
  ];
  const at = [];
  await context.route("**/v1/events", async (route) => {
    if (route.request().method() !== "POST") return route.fallback();
    at.push(Date.now());
    const next = answers.shift();
    if (!next) return route.fallback();
    await route.fulfill({
      status: next.status,
      headers: { "retry-after": String(next.wait), "access-control-allow-origin": w.allowed, "access-control-expose-headers": "retry-after" },
      contentType: "application/json",
      body: JSON.stringify({ error: "busy", retry_after_seconds: next.wait }),
    });
  });
  const page = await w.open(context, app);
  // A backoff of at most 50 ms: only Retry-After can explain waiting longer.
  await page.evaluate(() => window.makeProbe({ uploadInterval: 100, minBackoff: 10, maxBackoff: 50 }));
  await record(page, 10);
  await eventually(async () => (await w.server.events(app)) === 10, 30_000);
  assert.equal(at.length, 3, `three tries: ${at}`);
  assert.ok(at[1] - at[0] >= 2000, `after the 503: ${at[1] - at[0]} ms`);
  assert.ok(at[2] - at[1] >= 3000, `after the 429: ${at[2] - at[1]} ms`);
  assert.equal((await stats(page)).upload_failures, 2);
  await context.close();
});

test("a page on an origin its key does not allow is refused by the browser and an allowed one gets through", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const post = (page) =>
    page.evaluate(async ([url, key, app]) => {
      const event = { event_id: crypto.randomUUID(), device_id: "cors", occurred_at: new Date().toISOString(), success: true, duration_ms: 1, app_version: app, os: "web" };
      try {
        const r = await fetch(url + "/v1/events", {
          method: "POST",
          headers: { authorization: "Bearer " + key, "content-type": "application/json" },
          body: JSON.stringify({ sent_at: new Date().toISOString(), events: [event] }),
        });
        return { status: r.status, body: await r.json() };
      } catch (e) {
        return { error: String(e) };
      }
    }, [w.server.url, "shk_web_e2e_key", app]);
  const refused = await w.open(context, app, w.refused);
  const outcome = await post(refused);
  assert.match(outcome.error || "", /TypeError|Failed to fetch/, JSON.stringify(outcome));
  await refused.evaluate(() => window.makeProbe({ uploadInterval: 60_000, minBackoff: 10_000 }));
  await record(refused, 3);
  assert.equal(await flush(refused), false);
  assert.equal((await stats(refused)).upload_failures, 1);
  assert.equal(await w.server.events(app), 0, "nothing from the refused origin was stored");

  const allowed = await w.open(context, app);
  assert.deepEqual(await post(allowed), { status: 200, body: { accepted: 1, duplicates: 0, rejected: [] } });
  assert.equal(await w.server.events(app), 1);
  await context.close();
});

test("without IndexedDB events are still sent while the page lives and what the bounds cost is counted", async () => {
  const context = await w.browser.newContext();
  // Private-mode-like: opening a database fails.
  await context.addInitScript(() => {
    Object.defineProperty(window, "indexedDB", { value: { open() { throw new DOMException("denied", "InvalidStateError"); } } });
  });
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 200, maxEvents: 20 }));
  await context.setOffline(true);
  await record(page, 30);
  // Failures are never thinned: past the bound, the oldest go.
  await page.evaluate(() => { for (let i = 0; i < 30; i++) window.probe.start("pull", "scheduled").fail("server"); });
  await page.waitForTimeout(100);
  await context.setOffline(false);
  await page.evaluate(() => window.probe.flush());
  await eventually(async () => (await stats(page)).buffered === 0 && (await stats(page)).uploaded > 0);
  const s = await stats(page);
  assert.equal(s.storage, "memory");
  assert.ok(s.thinned > 0, JSON.stringify(s));
  assert.ok(s.dropped.buffer_full > 0, JSON.stringify(s));
  assert.equal(s.recorded, s.uploaded + s.thinned + s.dropped.buffer_full);
  const stored = await w.server.events(app);
  assert.equal(stored, s.uploaded, `stored ${stored}`);
  // The loss report reached the collector: the dashboard's health box shows it.
  const html = await w.server.overview(context);
  const box = html.slice(html.indexOf("Dropped by probes"), html.indexOf("Dropped by probes") + 400);
  assert.ok(html.includes(`buffer_full: ${s.dropped.buffer_full}`), `overview names the loss: ${box || html.slice(0, 300)}`);
  await context.close();
});

test("a page closed before its next upload sends what it holds in a keepalive request", async () => {
  const context = await w.browser.newContext();
  await context.addInitScript(() => Object.defineProperty(window, "indexedDB", { value: undefined }));
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 600_000 }));
  await record(page, 25);
  await page.waitForTimeout(50);
  assert.equal(await w.server.events(app), 0);
  await page.close({ runBeforeUnload: true });
  await eventually(async () => (await w.server.events(app)) === 25);
  await context.close();
});

// The race behind the skip this test once had (it failed once in eight runs
// in a loaded clean-clone CI run): a tab closed before IndexedDB had opened
// sent nothing at pagehide (no device id yet) while its pending write never
// finished, so its attempts were lost. The next test holds IndexedDB shut on
// purpose, so that window is not left to chance.
test("attempts recorded just before the tab closes reach the collector once, now or at the next visit", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 600_000 }));
  // No wait: the buffer write and the page's end race; either the keepalive
  // request or IndexedDB carries each event.
  await record(page, 30);
  await page.close({ runBeforeUnload: true });
  const again = await w.open(context, app);
  await again.evaluate(() => window.makeProbe({ uploadInterval: 600_000 }));
  assert.equal(await flush(again), true);
  await eventually(async () => (await w.server.events(app)) === 30);
  await context.close();
});

test("a tab closed before IndexedDB has opened still sends its attempts, with the device id it will keep", async () => {
  const context = await w.browser.newContext();
  // A database that never opens (a slow disk, a held upgrade): the probe's
  // start never finishes in this page.
  await context.addInitScript(() => Object.defineProperty(window, "indexedDB", { value: { open: () => ({}) } }));
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 600_000 }));
  await record(page, 30);
  const id = await page.evaluate(() => localStorage.getItem("synchealth.device"));
  assert.equal(id, null, "no device id before the page goes");
  await page.close({ runBeforeUnload: true });
  await eventually(async () => (await w.server.events(app)) === 30);
  // The id it made is kept for the next visit (whose IndexedDB takes it).
  const again = await context.newPage();
  await again.goto(`${w.allowed}/e2e/page.html`);
  assert.match(await again.evaluate(() => localStorage.getItem("synchealth.device")), /^[0-9a-f-]{36}$/);
  await context.close();
});

test("a service worker records and uploads through the same buffer as its pages, each event once", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const page = await w.open(context, app);
  await page.evaluate(() => window.makeProbe({ uploadInterval: 200 }));
  const q = { endpoint: w.server.url, key: "shk_web_e2e_key", app };
  const answer = await page.evaluate(async (q) => {
    const reg = await navigator.serviceWorker.register("/e2e/sw.js", { type: "module", scope: "/e2e/" });
    const worker = reg.active || (await new Promise((ok) => {
      const w = reg.installing || reg.waiting;
      w.addEventListener("statechange", () => w.state === "activated" && ok(w));
    }));
    const reply = new Promise((ok) => navigator.serviceWorker.addEventListener("message", (e) => ok(e.data), { once: true }));
    worker.postMessage({ ...q, n: 40 });
    // The page records too, at the same time, into the same database.
    for (let i = 0; i < 40; i++) window.probe.start("push", "local_write").succeed();
    return reply;
  }, q);
  assert.equal(answer.stats.recorded, 40, JSON.stringify(answer));
  assert.equal(answer.stats.storage, "indexeddb", "the worker buffers in IndexedDB");
  assert.deepEqual(answer.stats.dropped, {}, JSON.stringify(answer));
  assert.equal(await flush(page), true);
  await eventually(async () => (await w.server.events(app)) === 80);
  // Nothing sent twice: a duplicate is counted by the collector, not stored.
  const s = await stats(page);
  assert.equal(s.duplicates + answer.stats.duplicates, 0, JSON.stringify([s, answer.stats]));
  await context.close();
});

test("synchealth up --demo serves the example app, which reports as a browser device from the instance's own origin", async () => {
  const demo = await collector(w.allowed, ["--demo", "--demo-devices", "1"]);
  try {
    const context = await w.browser.newContext();
    const app = w.app();
    const page = await context.newPage();
    // No endpoint and no key in the address: the page posts to the origin
    // that served it, with the key the instance put in the page.
    await page.goto(`${demo.url}/demo/web/?version=${app}`);
    await page.fill("#text", "buy milk");
    await page.click("#add button");
    await eventually(async () => (await demo.events(app)) >= 2, 30_000);
    await context.close();
  } finally {
    await demo.close();
  }
});

test("the example app reports its sync attempts as a browser device", async () => {
  const context = await w.browser.newContext();
  const app = w.app();
  const page = await context.newPage();
  const q = new URLSearchParams({ endpoint: w.server.url, key: "shk_web_e2e_key", version: app });
  await page.goto(`${w.allowed}/example/index.html?${q}`);
  await page.fill("#text", "buy milk");
  await page.click("#add button");
  await eventually(async () => (await w.server.events(app)) >= 2, 30_000);
  await context.close();
});
