// What the browser tests stand on: a real `synchealth up` (the binary cargo
// built, on free ports, a fresh data directory, a known ingest key and admin
// password, as client-probe/bindings/python/tests/test_probe.py starts it),
// two static servers of this folder (an allowed origin and a refused one),
// and Debian's Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const KEY = "shk_web_e2e_key";
const PASSWORD = "web-e2e-password";
const ROOT = resolve(import.meta.dirname, "..");
const BINARY = process.env.SYNCHEALTH_BINARY || resolve(ROOT, "../../target/debug/synchealth");

export const freePort = () =>
  new Promise((ok, no) => {
    const s = netServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", no);
  });

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css" };

/** Serves client-probe/web (dist/, e2e/, example/) on a free port. */
async function staticServer() {
  const port = await freePort();
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(ROOT, path));
      res.writeHead(200, { "content-type": TYPES[extname(path)] || "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(port, "127.0.0.1", ok));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(ok)) };
}

/** `synchealth up` allowing browser posts from `allowedOrigin` only, with `extra` flags. */
export async function collector(allowedOrigin, extra = []) {
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), "synchealth-web-e2e-"));
  const proc = spawn(
    BINARY,
    ["up", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--ingest-key", KEY, "--admin-password", PASSWORD,
      "--ingest-key-allowed-origin", allowedOrigin, ...extra],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "error" } },
  );
  const lines = createInterface({ input: proc.stdout });
  await new Promise((ok, no) => {
    const timer = setTimeout(() => no(new Error("synchealth did not start within 60 s")), 60_000);
    proc.on("exit", (code) => no(new Error(`synchealth exited with ${code}`)));
    lines.on("line", (line) => line.includes("listening on") && (clearTimeout(timer), ok()));
  });
  const url = `http://127.0.0.1:${port}`;
  const auth = "Basic " + Buffer.from(`admin:${PASSWORD}`).toString("base64");
  return {
    url,
    /** Events stored for one app version (each test has its own), from the JSON API. */
    async events(appVersion) {
      const r = await fetch(`${url}/api/v1/summary?range=24h&app_version=${encodeURIComponent(appVersion)}`, { headers: { authorization: auth } });
      if (!r.ok) throw new Error(`summary: ${r.status} ${await r.text()}`);
      return (await r.json()).events;
    },
    /** The dashboard's overview page as a user sees it, logged in through its form in `context`. */
    async overview(context) {
      const page = await context.newPage();
      await page.goto(`${url}/login`);
      await page.fill("input[name=username]", "admin");
      await page.fill("input[name=password]", PASSWORD);
      await Promise.all([page.waitForNavigation(), page.click("button[type=submit], input[type=submit]")]);
      await page.goto(`${url}/`);
      const html = await page.content();
      await page.close();
      return html;
    },
    async close() {
      proc.removeAllListeners("exit");
      proc.kill("SIGTERM");
      await new Promise((ok) => (proc.exitCode !== null ? ok() : proc.on("exit", ok)));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The whole world of one test file. */
export async function world() {
  const allowed = await staticServer();
  const refused = await staticServer();
  const server = await collector(allowed.origin);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--disable-quic", "--no-first-run"],
  });
  let n = 0;
  return {
    allowed: allowed.origin,
    refused: refused.origin,
    server,
    browser,
    /** A fresh app version per test: the collector's counts are per test. */
    app: () => `9.${process.pid % 1000}.${++n}`,
    /** Opens the probe page of `origin` for `app` in `context`, ready for `makeProbe`. */
    async open(context, app, origin = allowed.origin) {
      const page = await context.newPage();
      const q = new URLSearchParams({ endpoint: server.url, key: KEY, app });
      await page.goto(`${origin}/e2e/page.html?${q}`);
      await page.waitForFunction(() => window.pageReady === true);
      return page;
    },
    async close() {
      await browser.close();
      await server.close();
      await allowed.close();
      await refused.close();
    },
  };
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, ms = 20_000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`not true within ${ms} ms (last: ${JSON.stringify(last)})`);
}
