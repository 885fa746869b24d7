// The nexus UI: one page, hash routes, plain DOM (no framework, no build step). Every
// value from the server is set as text, never as HTML, so a hostile tag or error
// message stays a string on the screen.
"use strict";

const API = "/algorithm/v1";
const STAGES = ["NEW", "BUFFERED", "RUNNING", "COMPLETED", "FAILED", "SCHEDULING_FAILED",
  "DEADLINE_EXCEEDED", "CANCELLED"];
const TERMINAL = new Set(["COMPLETED", "FAILED", "SCHEDULING_FAILED", "DEADLINE_EXCEEDED",
  "CANCELLED"]);
const REFRESH_MS = 3000;

let refreshTimer = null;
let lastLanes = null; // {at, launched: {shard: n}}: the launch rate is their difference

// --- DOM helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function notice(message, kind) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.className = kind || "error";
  box.hidden = !message;
}

function stageBadge(stage) {
  return el("span", { class: `stage stage-${String(stage).toLowerCase()}` }, stage);
}

function when(text) {
  if (!text) return "";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

function runHref(algorithm, id) {
  return `#/run/${encodeURIComponent(algorithm)}/${encodeURIComponent(id)}`;
}

// --- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options, asText) {
  const headers = Object.assign({ Accept: "application/json" }, (options || {}).headers);
  const token = sessionStorage.getItem("nexus-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  const body = await response.text();
  if (!response.ok) {
    const hint = response.status === 401 ? " (set a token above)" : "";
    throw new ApiError(response.status, `${response.status}: ${body || response.statusText}${hint}`);
  }
  if (asText) return body;
  if (!body) return null;
  try {
    return JSON.parse(body);
  } catch {
    return body; // the Job manifest is served as text/plain
  }
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

const enc = encodeURIComponent;

// --- routing ----------------------------------------------------------------------------

function route() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  notice("");
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const page = parts[0] || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const pages = { runs: () => runsPage(params), run: () => runPage(parts[1], parts[2]),
    shards: shardsPage, templates: templatesPage };
  (pages[page] || (() => show(el("p", {}, `No page '${page}'.`))))().catch((error) => {
    notice(error.message);
  });
}

// --- runs -------------------------------------------------------------------------------

function filterForm(params) {
  const stages = new Set(params.getAll("stage"));
  const input = (name, label, type) => el("label", {}, label,
    el("input", { name, type: type || "text", value: params.get(name) || "" }));
  const form = el("form", { id: "filters", class: "filters" },
    input("algorithm", "Algorithm"), input("tag", "Tag"), input("parent", "Parent id"),
    input("since", "Since"), input("until", "Until"),
    el("fieldset", {}, el("legend", {}, "Stage"),
      STAGES.map((stage) => el("label", { class: "check" },
        el("input", { type: "checkbox", name: "stage", value: stage, checked: stages.has(stage) }),
        stage))),
    el("button", { type: "submit" }, "Apply"),
    el("label", { class: "check" },
      el("input", { type: "checkbox", id: "live", checked: params.get("live") !== "off" }),
      "Live"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.append(key, value);
    if (!document.getElementById("live").checked) next.set("live", "off");
    location.hash = `#/runs?${next}`;
  });
  return form;
}

function listQuery(params, cursor) {
  const query = new URLSearchParams();
  for (const key of ["algorithm", "tag", "parent", "since", "until"]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  for (const stage of params.getAll("stage")) query.append("stage", stage);
  query.set("limit", "50");
  if (cursor) query.set("cursor", cursor);
  return query;
}

function countsTable(summary) {
  const byAlgorithm = new Map();
  for (const { algorithm, stage, count } of summary.counts || []) {
    if (!byAlgorithm.has(algorithm)) byAlgorithm.set(algorithm, {});
    byAlgorithm.get(algorithm)[stage] = count;
  }
  if (!byAlgorithm.size) return el("p", { class: "muted" }, "No runs in this window.");
  const window = `${when(summary.since)} – ${when(summary.until)}`;
  return el("table", { class: "counts" },
    el("caption", {}, window),
    el("thead", {}, el("tr", {}, el("th", {}, "Algorithm"), STAGES.map((s) => el("th", {}, s)))),
    el("tbody", {}, [...byAlgorithm].sort(([a], [b]) => a.localeCompare(b)).map(
      ([algorithm, stages]) => el("tr", { dataset: { algorithm } },
        el("td", {}, el("a", { href: `#/runs?algorithm=${enc(algorithm)}` }, algorithm)),
        STAGES.map((stage) => el("td", { class: "num", dataset: { stage } }, stages[stage] || 0))))));
}

function runsTable(runs) {
  if (!runs.length) return el("p", { class: "muted", id: "no-runs" }, "No runs match.");
  return el("table", { class: "runs", id: "runs" },
    el("thead", {}, el("tr", {}, ["Run", "Algorithm", "Stage", "Tag", "Received", "Changed"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, runs.map((run) => el("tr", { dataset: { id: run.requestId } },
      el("td", {}, el("a", { href: runHref(run.algorithm, run.requestId) }, run.requestId)),
      el("td", {}, run.algorithm), el("td", {}, stageBadge(run.stage)),
      el("td", {}, run.tag || ""), el("td", {}, when(run.receivedAt)),
      el("td", {}, when(run.lastModified))))));
}

async function runsPage(params) {
  const counts = el("section", { id: "counts" });
  const list = el("section", { id: "list" });
  show(el("h1", {}, "Runs"), filterForm(params), counts, list);
  let cursor = null;
  const load = async (more) => {
    const countQuery = new URLSearchParams();
    for (const key of ["algorithm", "since", "until"]) {
      if (params.get(key)) countQuery.set(key, params.get(key));
    }
    const [page, summary] = await Promise.all([
      api(`/runs?${listQuery(params, more ? cursor : null)}`),
      more ? null : api(`/runs/counts?${countQuery}`),
    ]);
    if (summary) counts.replaceChildren(el("h2", {}, "Stages"), countsTable(summary));
    const rows = more ? [...list.querySelectorAll("tbody tr")] : [];
    const table = runsTable(page.runs || []);
    if (more && rows.length && table.tBodies) table.tBodies[0].prepend(...rows);
    cursor = page.nextCursor || null;
    list.replaceChildren(table, cursor
      ? el("button", { id: "more", onclick: () => load(true).catch((e) => notice(e.message)) },
        "Older runs")
      : "");
  };
  await load(false);
  if (params.get("live") !== "off") {
    refreshTimer = setInterval(() => {
      if (!document.hidden) load(false).catch((error) => notice(error.message));
    }, REFRESH_MS);
  }
}

// --- one run ----------------------------------------------------------------------------

function field(label, value) {
  if (value === undefined || value === null || value === "") return null;
  return [el("dt", {}, label), el("dd", {}, value)];
}

function timeline(events) {
  if (!events || !events.length) return el("p", { class: "muted" }, "No history recorded.");
  return el("ol", { class: "timeline", id: "timeline" }, events.map((event) =>
    el("li", { dataset: { kind: event.kind } }, el("time", {}, when(event.at)), " ",
      event.kind === "stage" ? stageBadge(event.stage) : el("span", { class: "stage" }, event.kind),
      event.cause ? el("span", { class: "cause" }, ` ${event.cause}`) : "")));
}

async function runPage(algorithm, id) {
  const base = `${enc(algorithm)}/requests/${enc(id)}`;
  const meta = await api(`/metadata/${base}`);
  const [events, children, manifest, log] = await Promise.all([
    api(`/runs/${base}/events`).catch(() => null),
    api(`/runs?parent=${enc(`${algorithm}/${id}`)}&limit=100`).catch(() => null),
    api(`/buffer/${base}`).catch((error) => `(no Job: ${error.message})`),
    api(`/logs/${base}?tail=200`, {}, true).catch((error) => `(no log: ${error.message})`),
  ]);
  const stage = meta.lifecycle_stage;
  const actions = el("div", { class: "actions" },
    TERMINAL.has(stage) ? null : el("button", { id: "cancel", onclick: () => cancelRun(algorithm, id) },
      "Cancel"),
    TERMINAL.has(stage) ? el("button", { id: "resubmit", onclick: () => resubmitRun(algorithm, id) },
      "Resubmit") : null);
  const failed = meta.algorithm_failure_cause || meta.algorithm_failure_details;
  show(
    el("h1", {}, `${algorithm} / ${id}`),
    el("p", {}, stageBadge(stage)),
    actions,
    failed ? el("section", { class: "failure", id: "failure" }, el("h2", {}, "Why it failed"),
      el("p", { class: "cause" }, meta.algorithm_failure_cause || ""),
      el("pre", {}, meta.algorithm_failure_details || "")) : null,
    el("h2", {}, "Run"),
    el("dl", { class: "meta" },
      field("Tag", meta.tag), field("Received", when(meta.received_at)),
      field("Sent", when(meta.sent_at)), field("Changed", when(meta.last_modified)),
      field("Received by", meta.received_by_host), field("Created by", meta.created_by),
      field("Job uid", meta.job_uid),
      field("Payload", meta.payload_uri ? el("a", { href: meta.payload_uri, id: "payload" }, "payload") : null),
      field("Result", meta.result_uri ? el("a", { href: meta.result_uri, id: "result" }, "result") : null),
      field("Parent", meta.parent ? el("a", { id: "parent",
        href: runHref(meta.parent.algorithmName, meta.parent.requestId) },
        `${meta.parent.algorithmName} / ${meta.parent.requestId}`) : null),
      field("Resubmitted from", meta.resubmitted_from
        ? el("a", { href: runHref(algorithm, meta.resubmitted_from) }, meta.resubmitted_from) : null),
      field("Webhook", meta.callback_url)),
    el("h2", {}, "History"), timeline(events && events.events),
    el("h2", {}, "Children"),
    children && (children.runs || []).length ? runsTable(children.runs)
      : el("p", { class: "muted" }, "None."),
    el("h2", {}, "Log (last 200 lines)"),
    el("pre", { class: "log", id: "log" }, log || "(empty)"),
    el("h2", {}, "Job"),
    el("pre", { class: "manifest", id: "manifest" },
      typeof manifest === "string" ? manifest : JSON.stringify(manifest, null, 2)),
    el("h2", {}, "Metadata"),
    el("pre", { class: "manifest" }, JSON.stringify(meta, null, 2)));
  if (!TERMINAL.has(stage)) {
    refreshTimer = setInterval(() => {
      api(`/metadata/${base}`).then((now) => {
        if (now.lifecycle_stage !== stage) route();
      }).catch((error) => notice(error.message));
    }, REFRESH_MS);
  }
}

async function cancelRun(algorithm, id) {
  if (!confirm(`Cancel run ${id}?`)) return;
  try {
    await post(`/cancel/${enc(algorithm)}/requests/${enc(id)}`,
      { reason: "cancelled from the UI", initiator: "nexus-ui" });
    route();
    notice("Cancelled.", "ok");
  } catch (error) {
    notice(error.message);
  }
}

async function resubmitRun(algorithm, id) {
  try {
    const created = await post(`/resubmit/${enc(algorithm)}/requests/${enc(id)}`, {});
    location.hash = runHref(algorithm, created.requestId);
    notice(`Resubmitted as ${created.requestId}.`, "ok");
  } catch (error) {
    notice(error.message);
  }
}

// --- shards and templates ---------------------------------------------------------------

async function shardsPage() {
  const section = el("section", { id: "shards" });
  show(el("h1", {}, "Shards"), section);
  const load = async () => {
    const lanes = await api("/shards");
    const now = Date.now();
    const rate = (lane) => {
      if (!lastLanes || !(lane.shard in lastLanes.launched)) return "…";
      const seconds = (now - lastLanes.at) / 1000;
      return (Math.max(0, lane.launched - lastLanes.launched[lane.shard]) / seconds).toFixed(2);
    };
    section.replaceChildren(el("table", { class: "lanes" },
      el("thead", {}, el("tr", {}, ["Shard", "Queued", "Waiting to retry", "Capacity",
        "Launched", "Launches/s now", "Allowed /s (burst)"].map((h) => el("th", {}, h)))),
      el("tbody", {}, lanes.map((lane) => el("tr", { dataset: { shard: lane.shard } },
        el("td", {}, lane.shard), el("td", { class: "num queued" }, lane.queued),
        el("td", { class: "num" }, lane.delayed), el("td", { class: "num" }, lane.capacity),
        el("td", { class: "num launched" }, lane.launched), el("td", { class: "num" }, rate(lane)),
        el("td", { class: "num" }, `${lane.rate} (${lane.burst})`))))));
    lastLanes = { at: now, launched: Object.fromEntries(lanes.map((l) => [l.shard, l.launched])) };
  };
  await load();
  refreshTimer = setInterval(() => load().catch((error) => notice(error.message)), REFRESH_MS);
}

async function templatesPage() {
  const catalog = await api("/templates");
  const image = (spec) => {
    const c = spec.container || {};
    return `${c.registry || ""}/${c.image || ""}:${c.versionTag || ""}`;
  };
  show(
    el("h1", {}, "Templates"),
    el("table", { class: "templates", id: "templates" },
      el("thead", {}, el("tr", {}, ["Template", "Image", "Command", "Workgroup", "Runs"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, catalog.templates.map((t) => el("tr", {},
        el("td", {}, t.name), el("td", {}, image(t.spec)),
        el("td", {}, [t.spec.command, ...(t.spec.args || [])].join(" ")),
        el("td", {}, (t.spec.workgroupRef || {}).name || ""),
        el("td", {}, el("a", { href: `#/runs?algorithm=${enc(t.name)}` }, "runs")))))),
    el("h1", {}, "Workgroups"),
    el("table", { class: "workgroups", id: "workgroups" },
      el("thead", {}, el("tr", {}, ["Workgroup", "Cluster", "Description"].map((h) => el("th", {}, h)))),
      el("tbody", {}, catalog.workgroups.map((w) => el("tr", {},
        el("td", {}, w.name), el("td", {}, w.spec.cluster), el("td", {}, w.spec.description || ""))))));
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem("nexus-token") || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem("nexus-token", input.value.trim());
    else sessionStorage.removeItem("nexus-token");
    route();
  });
  window.addEventListener("hashchange", route);
  route();
});
