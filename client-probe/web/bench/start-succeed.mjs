// What `probe.start(...)` + `attempt.succeed(...)` cost on the caller's path,
// in Debian's Chromium (playwright-core): a page with the built probe (an
// IndexedDB buffer, uploads pointed at a closed port, so nothing is sent)
// times 20,000 pairs in one synchronous loop, several times; the figure is
// the mean per pair of each run. The buffer write and event making happen
// after the loop (a timer), off the measured path, as in use.
//   node bench/start-succeed.mjs [runs]
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "..");
const runs = Number(process.argv[2] || 7);
const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/") return res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>bench</title>");
  const body = await readFile(join(root, path)).catch(() => null);
  if (body) res.writeHead(200, { "content-type": "text/javascript" }).end(body);
  else res.writeHead(404).end();
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage();
await page.goto(`http://127.0.0.1:${server.address().port}/`);
const perPair = await page.evaluate(async (runs) => {
  const { Probe } = await import("/dist/probe.min.js");
  const probe = new Probe({ endpoint: "http://127.0.0.1:9", ingestKey: "shk_bench", appVersion: "1.0.0", uploadInterval: 3_600_000, maxEvents: 1_000_000, maxBytes: 1e12 });
  const N = 20_000;
  const out = [];
  for (let r = 0; r < runs + 1; r++) {
    const t = performance.now();
    for (let i = 0; i < N; i++) probe.start("push", "local_write").succeed({ records_up: i });
    const us = ((performance.now() - t) * 1000) / N;
    if (r > 0) out.push(us); // the first run warms the JIT
    await new Promise((ok) => setTimeout(ok, 300)); // the buffer writes, between runs
  }
  return out;
}, runs);
await browser.close();
server.close();
const sorted = [...perPair].sort((a, b) => a - b);
const f = (x) => x.toFixed(3);
console.log(`start + succeed in Chromium, ${runs} runs of 20000 pairs (µs per pair): ${perPair.map(f).join(" ")}`);
console.log(`median ${f(sorted[Math.floor(sorted.length / 2)])} µs, min ${f(sorted[0])}, max ${f(sorted.at(-1))} (budget 20 µs)`);
