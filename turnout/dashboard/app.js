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

function lineChart(points, { min = null, max = null, threshold = null, step = false } = {}) {
  // points: [[x, y], ...]; returns an SVG string scaled to a 600x120 viewBox.
  if (!points.length) return '<p class="muted">no data yet</p>';
  const W = 600, H = 120, P = 6;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  if (threshold !== null) ys.push(threshold);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = min ?? Math.min(...ys), y1 = max ?? Math.max(...ys, y0 + 1e-9);
  const X = (x) => P + (W - 2 * P) * (x - x0) / (x1 - x0);
  const Y = (y) => H - P - (H - 2 * P) * (y - y0) / ((y1 - y0) || 1);
  let d = "";
  points.forEach(([x, y], i) => {
    if (i === 0) d += `M${X(x)},${Y(y)}`;
    else d += step ? `H${X(x)}V${Y(y)}` : `L${X(x)},${Y(y)}`;
  });
  if (step) d += `H${W - P}`;
  const dots = step ? "" : points.map(([x, y]) => `<circle cx="${X(x)}" cy="${Y(y)}" r="3"/>`).join("");
  const limit = threshold === null ? "" :
    `<line x1="${P}" x2="${W - P}" y1="${Y(threshold)}" y2="${Y(threshold)}" stroke="#c9302c" stroke-dasharray="4 3"/>`;
  return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">${limit}` +
    `<path d="${d}" fill="none" stroke="#2a6fdb" stroke-width="2"/>` +
    `<g fill="#2a6fdb">${dots}</g></svg>`;
}

function renderRollout(r) {
  const phase = $("#phase");
  phase.className = "badge" + (r ? ` phase-${r.phase}` : "");
  phase.textContent = r ? r.phase : "none";
  setText("rollout-name", r ? `${r.name} (${r.id})` : "");
  setText("rollout-model", r ? `${r.model} -> ${r.candidate_slot}` : "-");
  setText("step", r && r.step >= 0 ? `${r.step + 1}/${r.steps.length} at ${r.target_weight}%` : "-");
  let pct = 0, text = "";
  if (r && r.step >= 0 && r.step_entered_at && r.steps[r.step]) {
    const bake = r.steps[r.step].bake_s, spent = (r.now ?? Date.now() / 1000) - r.step_entered_at;
    pct = Math.max(0, Math.min(100, 100 * spent / bake));
    text = `${Math.min(spent, bake).toFixed(0)} s of ${bake.toFixed(0)} s`;
  }
  $("#bake-bar").style.width = `${pct}%`;
  setText("bake-text", text);
  setText("reason", r ? r.reason : "no rollout yet");
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
  const now = s.at;
  const pts = s.weights_history.map((w) => [w.at, w.weights.green]);
  if (pts.length) pts.push([now, pts[pts.length - 1][1]]);
  $("#weights-chart").innerHTML = lineChart(pts, { min: 0, max: 100, step: true });
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
  $("#gates").innerHTML = gates.join("") || '<p class="muted">no gate round in this step</p>';
}

function renderFleet(s) {
  const xds = s.status.xds, transport = s.status.xds_transport || {};
  setText("transport", transport.transport ? `xDS ${transport.transport}` : "");
  $("#proxies tbody").innerHTML = xds.proxies.map((p) =>
    `<tr><td>${esc(p.node)}</td><td class="${p.in_sync ? "ready" : "unready"}">` +
    `${p.in_sync ? "in sync" : "BEHIND"}</td><td>` +
    Object.entries(p.acked).map(([t, v]) => `${esc(t)}=${esc(v.slice(0, 8))}`).join(" ") +
    "</td></tr>").join("") || '<tr><td colspan="3" class="muted">no proxy connected</td></tr>';
  const nack = xds.last_nack;
  setText("nack", nack ? `last NACK: ${nack.node} ${nack.type} ${nack.message}` : "last NACK: none");
}

function renderAudit(s) {
  $("#audit tbody").innerHTML = s.audit.map((e) =>
    `<tr data-seq="${e.seq}"><td>${clock(e.at)}</td><td>${esc(e.actor)}</td><td>${esc(e.kind)}</td>` +
    `<td>${e.phase_to ? esc((e.phase_from || "") + " -> " + e.phase_to) : ""}</td>` +
    `<td>${e.weights ? `${e.weights.blue}/${e.weights.green}` : ""}</td>` +
    `<td>${esc(e.message)}</td></tr>`).join("");
}

function render(s) {
  state = s;
  renderRollout(s.status.rollout);
  renderSlots(s);
  renderCharts(s);
  renderFleet(s);
  renderAudit(s);
  setText("updated", `updated ${clock(s.at)}` + (s.traffic_error ? ` - ${s.traffic_error}` : ""));
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
  const response = await fetch(`/v1/rollouts/current/${name}`, {
    method: "POST", headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: "{}" });
  const body = await response.json().catch(() => ({}));
  setText("action-result", response.ok ? `${name}: done` : `${name}: ${response.status} ${body.error || ""}`);
}

// Delegated: the buttons are re-created when a sign-out blanks the page.
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
