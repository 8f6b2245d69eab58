// ragops dashboard: renders the server's state (an SSE stream) and asks for rollout actions.
// Hand-written, no dependencies, no build step: every value from the cluster goes in as text, never HTML.
"use strict";

const TOKEN = document.querySelector('meta[name="ragops-token"]').content;
const RANGES = JSON.parse(document.querySelector('meta[name="ragops-ranges"]').content);
const COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#718096"];
const ACTIONS = [
  ["promote", "Promote"],
  ["promote-full", "Promote full"],
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["abort", "Abort"],
  ["retry", "Retry"],
];
const CHARTS = [
  ["p95LatencyMs", "p95 latency", "ms"],
  ["errorRate", "Error rate", "percent"],
  ["satisfaction", "Satisfaction", "score"],
  ["costPerQueryUsd", "Cost per query", "usd"],
  ["queriesPerSecond", "Queries per second", "rate"],
];
const GATE = [
  ["precisionAtK", "P@k"], ["recallAtK", "R@k"], ["mrr", "MRR"], ["ndcgAtK", "nDCG@k"], ["hitRate", "hit rate"],
  ["answerPassRate", "answers"],
];

let state = null;
let charts = null;
let stream = null;
const results = {}; // deployment key -> {ok, message}: the last action's answer, kept across renders
const pending = {}; // deployment key -> action being requested

// ---- DOM helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
    else if (key === "on") for (const [k, v] of Object.entries(value)) node.addEventListener(k, v);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

function tone(phase) {
  if (["Healthy", "Met", "Pass", "Ready", "KnownGood"].includes(phase)) return "ok";
  if (["Progressing", "Promoting", "Baking", "Building", "Evaluating"].includes(phase)) return "info";
  if (["Paused", "Inconclusive", "Pending", "Superseded"].includes(phase)) return "warn";
  if (["Degraded", "Aborted", "Failed", "Fail", "Breached", "RolledBack", "RolloutAborted"].includes(phase)) return "bad";
  return "";
}

function badge(text, extra) {
  return h("span", { class: "badge", data: { tone: tone(text) }, ...(extra || {}) }, text ?? "-");
}

function number(value, kind) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  if (kind === "ms") return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  if (kind === "percent") return `${(value * 100).toFixed(value < 0.01 ? 2 : 1)}%`;
  if (kind === "usd") return `$${value < 0.01 ? value.toPrecision(2) : value.toFixed(3)}`;
  if (kind === "rate") return `${value.toPrecision(3)}/s`;
  return Number(value).toPrecision(3);
}

function objectiveValue(name, value) {
  const kinds = { p95LatencyMs: "ms", errorRate: "percent", costPerQueryUsd: "usd" };
  return number(value, kinds[name] || "score");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return null;
  let s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  s %= 60;
  if (hours) return `${hours}h${String(minutes).padStart(2, "0")}m`;
  return minutes ? `${minutes}m${String(s).padStart(2, "0")}s` : `${s}s`;
}

function when(value) {
  if (!value) return "-";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
}

function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

// ---- the page ------------------------------------------------------------------------------------

function render() {
  const main = document.getElementById("deployments");
  const error = document.getElementById("error");
  if (!state) return;
  const problems = [state.error, ...(state.warnings || [])].filter(Boolean);
  error.hidden = !problems.length;
  error.textContent = problems.join(" · ");
  document.getElementById("updated").textContent = `updated ${new Date(state.generatedAt).toLocaleTimeString()}`;
  if (state.error && main.childElementCount) return; // keep showing the last good state under the banner
  const cards = (state.deployments || []).map(deploymentCard);
  main.replaceChildren(...(cards.length ? cards : [h("p", { class: "muted" }, "No RagDeployments here.")]));
}

function deploymentCard(d) {
  const facts = h("div", { class: "facts" },
    h("span", {}, "strategy ", h("b", {}, d.strategy)),
    h("span", { "data-testid": "serving" }, "serving ", h("b", {}, d.serving || "-")),
    d.desired !== d.serving ? h("span", {}, "desired ", h("b", {}, d.desired || "-")) : null,
    h("span", {}, "last known-good ", h("b", {}, d.lastKnownGood || "-")),
    h("span", {}, "replicas ", h("b", {}, `${d.replicas.ready ?? 0}/${d.replicas.existing ?? 0} ready`)),
    d.slo.measured ? h("span", {}, "SLOs ", badge(d.slo.measured.verdict)) : null,
  );
  return h("section", { class: "deployment", data: { deployment: d.key } },
    h("h2", {}, d.key, badge(d.phase || "Pending", { "data-testid": "phase" })),
    facts,
    rolloutPanel(d),
    h("h3", {}, "Charts per version"), chartsPanel(d),
    h("h3", {}, `Knowledge-base versions of ${d.knowledgeBase}`), versionsTable(d),
    h("h3", {}, "Revisions"), historyTable(d),
    h("h3", {}, "Rollbacks and aborts"), rollbacksList(d),
    h("h3", {}, "Recent events"), eventsTable(d),
  );
}

function rolloutPanel(d) {
  const r = d.rollout;
  const buttons = h("div", { class: "buttons" }, ACTIONS.map(([action, label]) =>
    h("button", {
      type: "button",
      data: { action },
      disabled: !d.actions[action] || Boolean(pending[d.key]),
      title: `kubectl ragops ${action === "promote-full" ? "promote --full" : action} ${d.name} -n ${d.namespace}`,
      on: { click: () => confirmAction(d, action, label) },
    }, label)));
  const result = results[d.key];
  const answer = pending[d.key]
    ? h("div", { class: "result", "data-testid": "action-result" }, `${pending[d.key]}: waiting for the operator…`)
    : result ? h("div", { class: "result", "data-testid": "action-result", data: { ok: String(result.ok) } },
      result.message) : null;
  if (!r) {
    return h("div", {}, h("h3", {}, "Rollout"),
      h("p", { class: "muted" }, d.strategy === "blueGreen"
        ? "blueGreen: a new version switches at once, then bakes; there are no steps to act on."
        : "No rollout yet."), buttons, answer);
  }
  const steps = h("ol", { class: "steps" }, r.steps.map((s) =>
    h("li", { data: { state: s.state }, "data-testid": "step" }, h("span", {}, `${s.number}. ${s.text}`),
      h("span", { class: "muted" }, s.state))));
  const left = [];
  if (r.stepSecondsLeft !== null) left.push(`step ends in ${duration(r.stepSecondsLeft)}`);
  if (r.phase === "Paused" && r.pauseReason) {
    left.push(r.pauseReason === "Manual" ? "paused by hand" : "waiting for promote");
  }
  if (r.timeoutSecondsLeft !== null) left.push(`timeout in ${duration(r.timeoutSecondsLeft)}`);
  const status = h("div", {},
    h("h3", {}, "Rollout"),
    h("div", { class: "facts" },
      badge(r.phase, { "data-testid": "rollout-phase" }),
      r.currentStep && r.stepCount ? h("span", { "data-testid": "current-step" },
        `step ${Math.min(r.currentStep, r.stepCount)}/${r.stepCount}`) : null),
    h("div", { class: "facts" },
      h("span", {}, "stable ", h("b", {}, r.stable || "-")),
      h("span", {}, "canary ", h("b", { "data-testid": "canary" }, r.canary || "-"))),
    h("div", { class: "facts" }, h("span", { "data-testid": "weight" }, `${r.weight}% of users`),
      r.shadowPercent ? h("span", {}, `shadow ${r.shadowPercent}%`) : null),
    h("div", { class: "weight", title: `${r.weight}%` }, h("div", { style: `width:${r.weight}%` })),
    left.length ? h("div", { class: "muted", "data-testid": "time-left" }, left.join(" · ")) : null,
    r.message ? h("p", { "data-testid": "rollout-message" }, r.message) : null,
    buttons, answer,
    r.lastAction ? h("div", { class: "muted" },
      `last action: ${r.lastAction.action} at ${when(r.lastAction.at)}: ${r.lastAction.outcome}`) : null);
  return h("div", { class: "rollout" }, h("div", {}, status), h("div", {},
    h("h3", {}, "Steps"), steps, analysisPanel(r)));
}

function analysisPanel(r) {
  const a = r.analysis;
  if (!a) return h("p", { class: "muted" }, "No analysis yet.");
  const rows = a.objectives.map((o) => h("tr", { "data-testid": "objective" },
    h("td", {}, o.name), h("td", {}, o.source || "-"),
    h("td", { class: "num" }, objectiveValue(o.name, o.stable)),
    h("td", { class: "num" }, objectiveValue(o.name, o.canary)),
    h("td", {}, o.limit), h("td", { class: `verdict-${o.verdict}` }, o.verdict), h("td", {}, o.samples),
    h("td", { class: "muted" }, o.message || "")));
  return h("div", {},
    h("h3", {}, "Analysis: stable vs canary"),
    h("div", { class: "facts" }, h("span", { class: `verdict-${a.verdict}`, "data-testid": "analysis-verdict" },
      a.verdict), h("span", { class: "muted" }, `at ${when(a.checkedAt)} over ${duration(a.windowSeconds)}`),
    a.sloVerdict ? h("span", {}, "candidate SLOs ", h("span", { class: `verdict-${a.sloVerdict}` }, a.sloVerdict))
      : null),
    table(["objective", "traffic", "stable", "canary", "limit", "verdict", "samples", ""], rows,
      { "data-testid": "analysis" }),
    a.message ? h("p", { class: "muted" }, a.message) : null);
}

function colorOf(d) {
  const names = [...new Set([...d.versions.map((v) => v.name)].sort())];
  return (version) => COLORS[Math.max(0, names.indexOf(version)) % COLORS.length];
}

function chartsPanel(d) {
  const mine = charts && charts.deployments && charts.deployments[d.key];
  if (!mine) return h("p", { class: "muted" }, "Reading Prometheus…");
  if (mine.error) return h("p", { class: "muted", "data-testid": "charts-error" }, mine.error);
  const color = colorOf(d);
  const limits = mine.limits || {};
  return h("div", { class: "charts" }, CHARTS.map(([key, title, kind]) =>
    lineChart(title, mine.series[key] || [], { kind, limit: limits[key], color, span: charts.span, end: charts.end,
      max: key === "satisfaction" ? 1 : null })));
}

function lineChart(title, lines, o) {
  const width = 300, height = 110, left = 44, bottom = 16, top = 6;
  const start = o.end - o.span;
  let high = o.max ?? 0;
  if (o.max === null) {
    for (const line of lines) for (const [, v] of line.points) high = Math.max(high, v);
    if (o.limit !== undefined && o.limit !== null) high = Math.max(high, o.limit);
    high = high > 0 ? high * 1.1 : 1;
  }
  const x = (t) => left + ((t - start) / o.span) * (width - left - 4);
  const y = (v) => top + (1 - v / high) * (height - top - bottom);
  const body = [
    svg("line", { class: "axis", x1: left, x2: width - 4, y1: y(0), y2: y(0) }),
    svg("text", { x: 2, y: y(high) + 8 }, number(high, o.kind)),
    svg("text", { x: 2, y: y(0) }, number(0, o.kind)),
    svg("text", { x: left, y: height - 3 }, `-${duration(o.span)}`),
    svg("text", { x: width - 26, y: height - 3 }, "now"),
  ];
  if (o.limit !== undefined && o.limit !== null && o.limit <= high) {
    body.push(svg("line", { class: "limit", x1: left, x2: width - 4, y1: y(o.limit), y2: y(o.limit) },
      svg("title", {}, `SLO ${number(o.limit, o.kind)}`)));
  }
  for (const line of lines) {
    const path = line.points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    body.push(svg("path", { d: path, fill: "none", stroke: o.color(line.version), "stroke-width": 1.6,
      "data-version": line.version }));
    const [t, v] = line.points[line.points.length - 1]; // the latest point, visible even when it is the only one
    body.push(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.2, fill: o.color(line.version) }));
  }
  const legend = h("div", { class: "legend" }, lines.length ? lines.map((line) => {
    const last = line.points[line.points.length - 1];
    return h("span", {}, h("i", { style: `background:${o.color(line.version)}` }),
      `${line.version} ${number(last ? last[1] : null, o.kind)}`);
  }) : h("span", { class: "muted" }, "no data in this range"));
  return h("div", { class: "chart", "data-testid": "chart", "data-chart": title },
    h("h4", {}, title), svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" }, body), legend);
}

function versionsTable(d) {
  if (!d.versions.length) return h("p", { class: "muted" }, "No KnowledgeBaseVersions found.");
  const rows = d.versions.map((v) => {
    const g = v.gate;
    const cells = GATE.map(([key]) => {
      const value = g ? g.metrics[key] : null;
      const threshold = g && g.thresholds ? g.thresholds[key] : undefined;
      return h("td", { class: "num", title: threshold !== undefined ? `threshold ${threshold}` : null },
        value === null || value === undefined ? "-" : value.toFixed(3));
    });
    return h("tr", { "data-testid": "version", data: { version: v.name } },
      h("td", {}, v.name), h("td", {}, badge(v.phase || "Pending")),
      h("td", {}, v.roles.map((role) => badge(role))),
      h("td", {}, g ? badge(g.passed ? "Pass" : "Fail") : "-"), cells,
      h("td", { class: "num" }, g ? g.cases : "-"),
      h("td", { class: "num" }, v.documents ?? "-"), h("td", { class: "num" }, v.chunks ?? "-"),
      h("td", { class: "muted" }, g && g.failed.length ? g.failed.join(", ") : ""));
  });
  return table(["version", "phase", "here", "gate", ...GATE.map(([, label]) => label), "cases", "docs", "chunks",
    "below threshold"], rows, { "data-testid": "versions" });
}

function historyTable(d) {
  if (!d.history.length) return h("p", { class: "muted" }, "No revision promoted yet.");
  return table(["#", "version", "promoted", "outcome", "why"], d.history.map((r) => h("tr", {},
    h("td", {}, r.revision), h("td", {}, r.kbVersion), h("td", {}, when(r.promotedAt)),
    h("td", {}, badge(r.outcome)), h("td", { class: "muted" }, r.reason || ""))), { "data-testid": "history" });
}

function rollbacksList(d) {
  if (!d.rollbacks.length) return h("p", { class: "muted" }, "None recorded.");
  return table(["when", "what", "why"], d.rollbacks.map((r) => h("tr", { "data-testid": "rollback" },
    h("td", {}, when(r.at)), h("td", {}, badge(r.kind)),
    h("td", {}, r.message, r.count > 1 ? ` (×${r.count})` : ""))), { "data-testid": "rollbacks" });
}

function eventsTable(d) {
  if (!d.events.length) return h("p", { class: "muted" }, "No recent events (the apiserver keeps them an hour).");
  return table(["when", "reason", "message"], d.events.map((e) => h("tr", {},
    h("td", {}, when(e.at)), h("td", {}, h("span", { class: e.type === "Warning" ? "verdict-Fail" : "" }, e.reason)),
    h("td", {}, e.message, e.count > 1 ? ` (×${e.count})` : ""))));
}

// ---- actions -------------------------------------------------------------------------------------

function consequence(d, action) {
  const r = d.rollout || {};
  const step = r.steps && r.currentStep ? r.steps[r.currentStep - 1] : null;
  switch (action) {
    case "promote": return `Complete step ${r.currentStep}/${r.stepCount}${step ? ` (${step.text})` : ""} of ` +
      `${r.canary} and go on with the next one.`;
    case "promote-full": return `Skip every remaining step: ${r.canary} answers every user now.`;
    case "pause": return "Hold the rollout at its current step; analysis and SLO protection keep running.";
    case "resume": return "Continue the rollout paused by hand.";
    case "abort": return `Send every user back to ${r.stable} at once; the rollout of ${r.canary} stays aborted.`;
    case "retry": return `Start the rollout of ${r.canary || d.desired} again from its first step.`;
    default: return "";
  }
}

function confirmAction(d, action, label) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = `${label} ${d.key}?`;
  document.getElementById("confirm-text").textContent =
    `${consequence(d, action)} Same as: kubectl ragops ${action === "promote-full" ? "promote --full" : action} ` +
    `${d.name} -n ${d.namespace}`;
  dialog.dataset.key = d.key;
  dialog.dataset.action = action;
  dialog.returnValue = "";
  dialog.showModal();
}

document.getElementById("confirm").addEventListener("close", async (event) => {
  const dialog = event.target;
  if (dialog.returnValue !== "ok") return;
  const key = dialog.dataset.key;
  const action = dialog.dataset.action;
  const [namespace, name] = key.split("/");
  pending[key] = action;
  delete results[key];
  render();
  try {
    const response = await fetch(`/api/deployments/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/` +
      encodeURIComponent(action), { method: "POST", headers: { "X-Ragops-Token": TOKEN } });
    const answer = await response.json();
    results[key] = { ok: Boolean(answer.ok), message: answer.message };
  } catch (error) {
    results[key] = { ok: false, message: `the dashboard did not answer: ${error}` };
  }
  delete pending[key];
  render();
});

// ---- live updates --------------------------------------------------------------------------------

function setConnection(text, live) {
  const node = document.getElementById("connection");
  node.textContent = text;
  node.dataset.state = live;
}

function connect() {
  if (stream) stream.close();
  const range = document.getElementById("range").value;
  stream = new EventSource(`/api/stream?range=${encodeURIComponent(range)}`);
  stream.addEventListener("open", () => setConnection("live", "live"));
  stream.addEventListener("error", () => setConnection("reconnecting", "lost")); // EventSource retries by itself
  stream.addEventListener("state", (event) => { state = JSON.parse(event.data); render(); });
  stream.addEventListener("charts", (event) => { charts = JSON.parse(event.data); render(); });
}

const rangeSelect = document.getElementById("range");
for (const range of RANGES) rangeSelect.append(h("option", { value: range, selected: range === "1h" }, range));
rangeSelect.addEventListener("change", () => { charts = null; render(); connect(); });
connect();
