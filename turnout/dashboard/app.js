// Turnout dashboard: renders the control plane's state, pushed as server-sent events.
// No framework and no build step; charts are plain SVG.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (v, digits = 3) => (v === null || v === undefined) ? "n/a"
  : (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v).toPrecision(digits));
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
let state = null;

function setText(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }

function scale(points, { min = null, max = null, threshold = null, atLeast = 1e-9 } = {}) {
  const W = 600, H = 120, L = 44, R = 8, T = 8, B = 20;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  if (threshold !== null) ys.push(threshold);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = min ?? Math.min(...ys), y1 = max ?? Math.max(...ys, y0 + atLeast);
  return { W, H, L, R, T, B, x0, x1, y0, y1,
    X: (x) => L + (W - L - R) * (x - x0) / (x1 - x0),
    Y: (y) => H - B - (H - T - B) * (y - y0) / ((y1 - y0) || 1) };
}

function axes(sc, unit = "") {
  // Three labelled ticks on the value axis; the first and the last time on the time axis.
  const ticks = [sc.y0, (sc.y0 + sc.y1) / 2, sc.y1].map((v) =>
    `<line x1="${sc.L}" x2="${sc.W - sc.R}" y1="${sc.Y(v)}" y2="${sc.Y(v)}" class="grid"/>` +
    `<text x="${sc.L - 4}" y="${sc.Y(v) + 4}" text-anchor="end" class="axis-y">${Number(v.toPrecision(3))}${unit}</text>`);
  return `<g class="axes">${ticks.join("")}` +
    `<line x1="${sc.L}" x2="${sc.L}" y1="${sc.T}" y2="${sc.H - sc.B}" class="axis"/>` +
    `<line x1="${sc.L}" x2="${sc.W - sc.R}" y1="${sc.H - sc.B}" y2="${sc.H - sc.B}" class="axis"/>` +
    `<text x="${sc.L}" y="${sc.H - 4}" class="axis-x">${clock(sc.x0)}</text>` +
    `<text x="${sc.W - sc.R}" y="${sc.H - 4}" text-anchor="end" class="axis-x">${clock(sc.x1)}</text></g>`;
}

function path(points, sc, step) {
  let d = "";
  points.forEach(([x, y], i) => {
    if (i === 0) d += `M${sc.X(x)},${sc.Y(y)}`;
    else d += step ? `H${sc.X(x)}V${sc.Y(y)}` : `L${sc.X(x)},${sc.Y(y)}`;
  });
  return d;
}

function lineChart(points, { min = null, max = null, threshold = null, unit = "" } = {}) {
  // points: [[time, value], ...]; an SVG with axes in a 600x120 viewBox.
  if (!points.length) return '<p class="muted">no data yet</p>';
  const sc = scale(points, { min, max, threshold });
  const dots = points.map(([x, y]) => `<circle cx="${sc.X(x)}" cy="${sc.Y(y)}" r="3"/>`).join("");
  const limit = threshold === null ? "" :
    `<line x1="${sc.L}" x2="${sc.W - sc.R}" y1="${sc.Y(threshold)}" y2="${sc.Y(threshold)}" stroke="#c9302c" stroke-dasharray="4 3"/>`;
  return `<svg viewBox="0 0 ${sc.W} ${sc.H}">${axes(sc, unit)}${limit}` +
    `<path d="${path(points, sc, false)}" fill="none" stroke="#2a6fdb" stroke-width="2"/>` +
    `<g fill="#2a6fdb">${dots}</g></svg>`;
}

function weightsChart(history, now, candidate) {
  // Both slots' weights as steps over time, each in its slot's colour; the candidate's bold.
  if (!history.length) return '<p class="muted">no weight change recorded yet</p>';
  const series = {};
  for (const slot of ["blue", "green"]) {
    const pts = history.map((w) => [w.at, w.weights[slot]]);
    pts.push([now, pts[pts.length - 1][1]]);
    series[slot] = pts;
  }
  const sc = scale(series.blue.concat(series.green), { min: 0, max: 100 });
  const lines = Object.entries(series).map(([slot, pts]) =>
    `<path data-slot="${slot}" class="w-${slot}${slot === candidate ? " candidate" : ""}" ` +
    `d="${path(pts, sc, true)}" fill="none"/>`).join("");
  return `<svg viewBox="0 0 ${sc.W} ${sc.H}">${axes(sc, "%")}${lines}</svg>`;
}

function seriesChart(series, metrics, { unit = "", scaleBy = 1, min = 0, atLeast = 1 } = {}) {
  // Both slots over time, one line per slot and metric (the second metric dashed); a gap
  // where a figure was missing. metrics: [[key, label], ...].
  const lines = [];
  for (const slot of ["blue", "green"]) {
    metrics.forEach(([key, label], i) => {
      const pts = series.filter((p) => p[slot] && p[slot][key] != null)
        .map((p) => [p.at, p[slot][key] * scaleBy]);
      if (pts.length) lines.push({ slot, key, label, dashed: i > 0, pts });
    });
  }
  if (!lines.length) return '<p class="muted">no data yet</p>';
  const sc = scale(lines.flatMap((l) => l.pts), { min, atLeast });
  const paths = lines.map((l) =>
    `<path data-slot="${l.slot}" data-metric="${esc(l.key)}" data-points="${l.pts.length}" ` +
    `class="w-${l.slot}${l.dashed ? " dashed" : ""}" d="${path(l.pts, sc, false)}" fill="none"/>`).join("");
  const legend = metrics.map(([, label], i) => `${i ? "dashed" : "solid"}: ${esc(label)}`).join(", ");
  return `<svg viewBox="0 0 ${sc.W} ${sc.H}">${axes(sc, unit)}${paths}</svg>` +
    `<div class="muted">blue and green; ${legend}</div>`;
}

function renderSeries(s) {
  const series = s.series || [];
  $("#series-latency").innerHTML = seriesChart(series, [["p50_ms", "p50"], ["p99_ms", "p99"]], { unit: " ms" });
  $("#series-rps").innerHTML = seriesChart(series, [["rps", "requests/s"]]);
  $("#series-errors").innerHTML = seriesChart(series, [["error_rate", "error rate"]], { unit: "%", scaleBy: 100 });
  // Streaming models: time to first token and between tokens, when there are streams.
  const streaming = series.some((p) => ["blue", "green"].some((slot) => p[slot] && p[slot].ttft_p50_ms != null));
  $("#series-stream-card").hidden = !streaming;
  if (streaming) {
    $("#series-stream").innerHTML = seriesChart(series, [["ttft_p50_ms", "TTFT p50"], ["itl_p99_ms", "ITL p99"]], { unit: " ms" });
  }
}

function bake(r, nowClient) {
  // What the bar and its label both show: one fraction, one text.
  if (!r || r.phase !== "baking" || !r.step_entered_at || !r.steps[r.step]) {
    const waiting = { awaiting_approval: "waiting for approval", paused: "paused",
      shifting: "waiting for every Envoy's ACK" }[r && r.phase];
    return { fraction: 0, text: waiting || "-" };
  }
  const total = r.steps[r.step].bake_s;
  const now = r.now + (nowClient - r.received);  // the server's clock, advanced locally
  const spent = Math.max(0, now - r.step_entered_at);
  if (total <= 0 || spent >= total) {
    return { fraction: 1, text: `${total.toFixed(0)} s of ${total.toFixed(0)} s: baked, waiting for the gates' verdict` };
  }
  return { fraction: spent / total, text: `${spent.toFixed(0)} s of ${total.toFixed(0)} s` };
}

function renderBake() {
  const r = state && state.status.rollout;
  const b = bake(r, Date.now() / 1000);
  const bar = $("#bake-bar");
  if (!bar) return;
  bar.style.width = `${(100 * b.fraction).toFixed(1)}%`;
  bar.dataset.fraction = b.fraction.toFixed(3);
  setText("bake-text", b.text);
}
setInterval(renderBake, 250);

function renderRollout(r) {
  const phase = $("#phase");
  phase.className = "badge" + (r ? ` phase-${r.phase}` : "");
  phase.textContent = r ? r.phase : "none";
  setText("rollout-name", r ? `${r.name} (${r.id})` : "");
  setText("rollout-model", r ? `${r.model} -> ${r.candidate_slot}` : "-");
  // The step the rollout is in (and its weight), apart from the weight every Envoy serves.
  const step = r && r.step >= 0 ? r.steps[r.step] : null;
  setText("step", step ? `${r.step + 1} of ${r.steps.length} (` +
    (step.shadow ? `shadow ${step.shadow}%, weight ${step.weight}%` : `${step.weight}%`) + ")" : "-");
  renderShadow(r && r.shadow);
  setText("candidate-weight", r ? `${r.applied_weight}%` +
    (r.target_weight !== r.applied_weight ? ` -> ${r.target_weight}%` : "") : "-");
  if (r) r.received = Date.now() / 1000;
  renderBake();
  setText("reason", r ? r.reason : "no rollout yet");
  const allowed = new Set((r && r.commands) || []);
  for (const button of document.querySelectorAll("button[data-command]")) {
    button.hidden = !allowed.has(button.dataset.command);
  }
  setText("no-actions", allowed.size ? "" : (r ? `nothing to do while ${r.phase}` : "no rollout to act on"));
}

// A shadow step's comparison: requests compared, disagreement, the worst output, and the
// first disagreeing requests (digests and reasons only, never payloads).
function renderShadow(shadow) {
  $("#shadow").hidden = !shadow;
  if (!shadow) return;
  const rate = shadow.disagreement_rate == null ? "-" : (100 * shadow.disagreement_rate).toFixed(2) + "%";
  const worst = Object.entries(shadow.worst_abs_diff || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "-";
  setText("shadow-figures", `${shadow.compared} compared, ${shadow.disagreed} disagreed (${rate}); ` +
    `worst abs diff ${worst}; latency x${shadow.latency_ratio == null ? "-" : shadow.latency_ratio}; ` +
    `${shadow.refused} refused, ${shadow.timed_out} unanswered, ${shadow.truncated} too large`);
  $("#shadow-examples").innerHTML = (shadow.examples || []).slice(0, 3).map((e) =>
    `<li>${esc(e.request)}: ${esc(e.why)}</li>`).join("");
}

function renderSlots(s) {
  const status = s.status;
  for (const slot of ["blue", "green"]) {
    const root = document.getElementById(`slot-${slot}`);
    setText(`weight-${slot}`, `${status.weights[slot]}%`);
    const models = (s.models[slot] || []).map((m) =>
      `<div><b>${esc(m.ref)}</b> <span class="muted">${esc(m.stage)} ${esc(m.digest.slice(0, 12))}</span></div>`);
    $(".models", root).innerHTML = models.join("") || '<div class="muted">no model</div>';
    $(".servers", root).innerHTML = (status.slots[slot] || []).map((e) =>
      `<tr><td>${esc(e.endpoint)}</td><td class="${e.ready ? "ready" : "unready"}">` +
      `${e.ready ? "ready" : "NOT READY"}</td></tr>`).join("");
    const t = s.traffic[slot] || {};
    $(".traffic", root).innerHTML =
      `<div><span class="label">req/s</span><b data-k="rps">${fmt(t.rps)}</b></div>` +
      `<div><span class="label">p50 ms</span><b data-k="p50">${fmt(t.p50_ms)}</b></div>` +
      `<div><span class="label">p99 ms</span><b data-k="p99">${fmt(t.p99_ms)}</b></div>` +
      `<div><span class="label">errors</span><b data-k="err">${t.error_rate == null ? "n/a" : (100 * t.error_rate).toFixed(2) + "%"}</b></div>`;
  }
}

function renderCharts(s) {
  const r = s.status.rollout;
  const candidate = r && !["promoted", "rolled_back", "aborted", "failed"].includes(r.phase) ? r.candidate_slot : null;
  setText("weights-legend", candidate ? `candidate: ${candidate} (bold)` : "");
  $("#weights-chart").innerHTML = weightsChart(s.weights_history, s.at, candidate);
  setText("rounds-of", s.rounds_of || "this step");
  const byMetric = {};
  for (const round of s.rounds) {
    for (const m of round.measurements) {
      (byMetric[m.metric] = byMetric[m.metric] || []).push({ at: round.at, ...m });
    }
  }
  const gates = Object.entries(byMetric).map(([name, ms]) => {
    const last = ms[ms.length - 1];
    // "<=0.01", "ratio<=2.5 delta>5": a ratio gate is charted as the ratio, else the value.
    const limits = Object.fromEntries((last.threshold || "").split(" ").map((part) => {
      const m = part.match(/^(ratio)?([<>]=)(.+)$/);
      return m ? [(m[1] || "value") + m[2], Number(m[3])] : [part, null];
    }));
    const ratio = ("ratio<=" in limits) || ("ratio>=" in limits);
    const key = ratio ? "ratio" : "value";
    const limit = ratio ? (limits["ratio<="] ?? limits["ratio>="]) : (limits["value<="] ?? limits["value>="] ?? null);
    const points = ms.filter((m) => m[key] !== null && m[key] !== undefined && isFinite(m[key]));
    return `<div class="gate" data-metric="${esc(name)}"><div class="title"><b>${esc(name)}</b>` +
      `<span class="${esc(last.phase)}">${esc(last.phase)}: ${esc(last.message)}</span></div>` +
      lineChart(points.map((m) => [m.at, m[key]]), { threshold: limit }) +
      `<div class="muted">${ratio ? "candidate / active" : "value"} against ${esc(last.threshold)} ` +
      `(dashed)</div></div>`;
  });
  $("#gates").innerHTML = gates.join("") || '<p class="muted">no gate round yet</p>';
}

function renderFleet(s) {
  const xds = s.status.xds, transport = s.status.xds_transport || {};
  setText("transport", transport.transport ? `xDS ${transport.transport}` : "");
  $("#proxies tbody").innerHTML = xds.proxies.map((p) =>
    `<tr><td>${esc(p.node)}</td><td class="${p.in_sync ? "ready" : "unready"}">` +
    `${p.in_sync ? "in sync" : "BEHIND"}${p.awaited === false ? " (not awaited)" : ""}</td><td>` +
    Object.entries(p.acked).map(([t, v]) => `${esc(t)}=${esc(v.slice(0, 8))}`).join(" ") +
    "</td></tr>").join("") || '<tr><td colspan="3" class="muted">no proxy connected</td></tr>';
  const nack = xds.last_nack;
  setText("nack", nack ? `last NACK: ${nack.node} ${nack.type} ${nack.message}` : "last NACK: none");
}

function foldRounds(entries) {
  // Newest first. A run of gate rounds of one step becomes one row that lists them.
  const rows = [];
  for (const e of entries) {
    const step = e.kind === "gates" ? (e.message.match(/^step (\d+) round/) || [])[1] : undefined;
    const last = rows[rows.length - 1];
    if (step !== undefined && last && last.step === step) { last.entries.push(e); continue; }
    rows.push({ step, entries: [e] });
  }
  return rows;
}

function auditRow(row) {
  const e = row.entries[0];  // the newest
  const seqs = row.entries.map((x) => x.seq).join(" ");
  let message = esc(e.message);
  if (row.entries.length > 1) {
    const counts = {};
    for (const x of row.entries) { const v = x.message.split(": ").pop(); counts[v] = (counts[v] || 0) + 1; }
    const summary = Object.entries(counts).map(([k, n]) => `${n} ${esc(k)}`).join(", ");
    message = `<details><summary>step ${esc(row.step)}: ${row.entries.length} gate rounds (${summary})</summary>` +
      row.entries.map((x) => `<div>${clock(x.at)} ${esc(x.message)}</div>`).join("") + "</details>";
  }
  return `<tr data-seq="${e.seq}" data-seqs="${seqs}" data-kind="${esc(e.kind)}" data-folded="${row.entries.length}">` +
    `<td>${clock(e.at)}</td><td>${esc(e.actor)}</td><td>${esc(e.kind)}</td>` +
    `<td>${e.phase_to ? esc((e.phase_from || "") + " -> " + e.phase_to) : ""}</td>` +
    `<td>${e.weights ? `${e.weights.blue}/${e.weights.green}` : ""}</td><td>${message}</td></tr>`;
}

function renderAudit(s) {
  const select = $("#audit-kind");
  const chosen = select.value;
  const kinds = [...new Set(s.audit.map((e) => e.kind))].sort();
  if (chosen && !kinds.includes(chosen)) kinds.push(chosen);
  const options = ["", ...kinds].map((k) => `<option value="${esc(k)}"${k === chosen ? " selected" : ""}>${k ? esc(k) : "every kind"}</option>`).join("");
  if (select.dataset.options !== options) { select.innerHTML = options; select.dataset.options = options; }
  const open = new Set([...document.querySelectorAll("#audit details[open]")].map((d) => d.closest("tr").dataset.seq));
  const entries = chosen ? s.audit.filter((e) => e.kind === chosen) : s.audit;
  $("#audit tbody").innerHTML = foldRounds(entries).map(auditRow).join("");
  for (const seq of open) {  // a row a person opened stays open across pushes
    const details = $(`#audit tr[data-seq="${seq}"] details`); if (details) details.open = true;
  }
}

function render(s) {
  state = s;
  renderRollout(s.status.rollout);
  renderSlots(s);
  renderCharts(s);
  renderSeries(s);
  renderFleet(s);
  renderAudit(s);
  setText("updated", `updated ${clock(s.at)}`);
  // Traffic figures say how old they are, or are not shown at all.
  setText("traffic-age", s.traffic_at ? `traffic over the last 10 s, measured ${Math.max(0, s.at - s.traffic_at).toFixed(1)} s ago` +
    (s.traffic_error ? ` (${s.traffic_error})` : "") : `no traffic figures: ${s.traffic_error || "not measured yet"}`);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// ---- signing in: the data needs a session (an HttpOnly cookie) or a public dashboard ----
const blank = $("main").innerHTML;
let source = null;

function showSignIn(message) {
  if (source) { source.close(); source = null; }
  state = null;
  $("main").innerHTML = blank;  // nothing of the signed-out session's data stays
  $("main").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  setText("signin-message", message || "");
  const conn = $("#conn"); conn.className = "badge off"; conn.textContent = "signed out";
  setText("updated", "");
  document.body.dataset.signedIn = "no";
}

function showData(s) {
  $("#signin").hidden = true;
  $("main").hidden = false;
  $("#signout").hidden = false;
  document.body.dataset.signedIn = "yes";
  render(s);
}

function connect() {
  source = new EventSource("/dashboard/events");
  source.addEventListener("state", (event) => {
    const conn = $("#conn"); conn.className = "badge ok"; conn.textContent = "live";
    showData(JSON.parse(event.data));
  });
  source.addEventListener("signed-out", (event) => {
    showSignIn(JSON.parse(event.data).error);
  });
  source.onerror = () => {
    const conn = $("#conn"); conn.className = "badge off"; conn.textContent = "reconnecting";
    // A refused reconnect closes the stream for good: ask why (signed out, or down).
    if (source && source.readyState === EventSource.CLOSED) { source = null; setTimeout(start, 1000); }
  };
}

async function start() {
  let response;
  try {
    response = await fetch("/dashboard/state", { credentials: "same-origin" });
  } catch (err) {
    setText("updated", "control plane unreachable; retrying");
    setTimeout(start, 2000);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { showSignIn(body.error); return; }
  if (!response.ok) { setText("updated", `${response.status} ${body.error || ""}`); setTimeout(start, 2000); return; }
  showData(body);
  if (!source) connect();
}

async function signIn(init) {
  const response = await fetch("/dashboard/session", { method: "POST", credentials: "same-origin", ...init });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { showSignIn(`${response.status}: ${body.error || "refused"}`); return; }
  await start();
}

$("#signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#signin-token").value.trim();
  $("#signin-token").value = "";
  if (!token) { setText("signin-message", "enter a token"); return; }
  signIn({ headers: { "Authorization": `Bearer ${token}` } });
});

$("#signout").addEventListener("click", async () => {
  await fetch("/dashboard/session", { method: "DELETE", credentials: "same-origin" });
  showSignIn("signed out");
});

async function command(name) {
  const token = $("#token").value.trim();
  if (!token) { setText("action-result", "enter a token with the operate role first"); return; }
  sessionStorage.setItem("turnout-token", token);
  if (name === "abort" || name === "rollback") {
    if (!window.confirm(`${name} the rollout? Traffic goes back to the stable slot.`)) return;
  }
  const response = await fetch(`/v1/rollouts/current/${name}`, {
    method: "POST", headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: "{}" });
  const body = await response.json().catch(() => ({}));
  setText("action-result", response.ok ? `${name}: done` : `${name}: ${response.status} ${body.error || ""}`);
}

// Delegated: the buttons are re-created when a sign-out blanks the page.
document.addEventListener("change", (event) => {
  if (event.target.id === "audit-kind" && state) renderAudit(state);
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-command]");
  if (button) command(button.dataset.command);
});
$("#token").value = sessionStorage.getItem("turnout-token") || "";

// `turnout dashboard` opens the page with a one-time code in the fragment (never sent in
// a request line, so never in a log): trade it for a session, then drop it from the URL.
function takeCode() {
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  if (!code) return false;
  history.replaceState(null, "", location.pathname);
  signIn({ headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }) });
  return true;
}
window.addEventListener("hashchange", takeCode);
if (!takeCode()) start();
