// A tiny local-first app: to-dos kept in localStorage with a queue of
// unsynced writes, and a fake sync loop (push the queue, pull) whose every
// attempt the probe reports: `probe.track(...)` around the promise, the
// queue depth beside it. Point it at a collector with ?endpoint=&key=; served
// by `synchealth up --demo` (at /demo/web/) it posts to that instance with
// the key in its <meta name="synchealth-ingest-key">.
import { Probe } from "./probe.min.js";

const q = new URLSearchParams(location.search);
const probe = new Probe({
  endpoint: q.get("endpoint") || location.origin,
  ingestKey: q.get("key") || document.querySelector('meta[name="synchealth-ingest-key"]')?.content || "shk_demo",
  appVersion: q.get("version") || "1.0.0",
  uploadInterval: 5000,
});

const state = JSON.parse(localStorage.getItem("todos") || '{"items":[],"queue":[]}');
const save = () => localStorage.setItem("todos", JSON.stringify(state));
const $ = (id) => document.getElementById(id);

function render() {
  $("list").replaceChildren(
    ...state.items.map((item) => {
      const li = document.createElement("li");
      li.textContent = item.text;
      if (state.queue.includes(item.id)) li.className = "pending";
      return li;
    }),
  );
  const s = probe.stats();
  $("status").textContent =
    `queue: ${state.queue.length} unsynced\n` +
    `probe: ${s.recorded} attempts recorded, ${s.uploaded} uploaded, ${s.buffered} buffered (${s.storage})`;
}

/** The pretend server: 100-900 ms, and fails a third of the time when "flaky" is on. */
const server = (n) =>
  new Promise((ok, fail) =>
    setTimeout(() => ($("flaky").checked && Math.random() < 1 / 3 ? fail(new Error("503 from the sync server")) : ok(n)), 100 + Math.random() * 800),
  );

async function sync(trigger) {
  const pushing = state.queue.slice();
  try {
    await probe.track(pushing.length ? "push" : "pull", trigger, () => server(pushing.length), "network");
    state.queue = state.queue.filter((id) => !pushing.includes(id));
    save();
  } catch {
    // The queue stays; the next round tries again.
  }
  probe.setQueueDepth(state.queue.length);
  render();
}

$("add").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = crypto.randomUUID();
  state.items.push({ id, text: $("text").value });
  state.queue.push(id);
  $("text").value = "";
  save();
  render();
  sync("local_write");
});
addEventListener("online", () => sync("reconnect"));
setInterval(() => sync("scheduled"), 4000);
render();
sync("app_open");
