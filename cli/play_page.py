"""The page of `worldmodels play` (cli/play.py): one HTML document with its CSS and JavaScript inline, so the
command needs no static files. It asks ``/api/info`` what the model is, then drives ``/api/reset``,
``/api/step`` and ``/api/policy``; one request at a time (a key pressed while a step is on its way is kept, the
latest one, and sent when the step is back), so holding a key runs the dream as fast as the model steps.

Keys: arrows move continuous action dims 0 (left -, right +) and 1 (up +, down -) by the strength slider, each
press (and each key repeat while held) one step; two arrows held together combine. Enter steps with the
sliders' action, space with no action (zeros; discrete: action 0), digits 1..9 and 0 pick discrete actions
0..9, R resets from the chosen source, A hands control to the agent and takes it back.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>worldmodels play</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  #model { color: #555; margin-bottom: 12px; }
  .panels { display: flex; gap: 16px; flex-wrap: wrap; }
  figure { margin: 0; text-align: center; }
  .layout { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
  figure img { width: 224px; height: 224px; image-rendering: pixelated; background: #000;
    border: 3px solid #c00; display: block; }
  #real, #error { border-color: #080; }
  figcaption { font-size: 12px; color: #444; max-width: 230px; }
  .row { display: flex; gap: 24px; flex-wrap: wrap; margin-top: 12px; align-items: flex-start; }
  table.readout td { padding: 1px 10px 1px 0; }
  table.readout td:nth-child(2) { font-family: ui-monospace, monospace; min-width: 90px; }
  fieldset { border: 1px solid #ccc; border-radius: 6px; padding: 6px 10px; margin: 0 0 8px; }
  legend { font-size: 12px; color: #555; }
  .dpad { display: grid; grid-template-columns: repeat(3, 44px); gap: 4px; }
  .dpad button, .discrete button { height: 36px; font-size: 16px; }
  .slider { display: flex; gap: 6px; align-items: center; font-size: 12px; }
  input[type=number] { width: 60px; }
  #status { color: #a00; min-height: 1.4em; }
  .keys { color: #555; font-size: 12px; }
  kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 4px; background: #fff; }
</style>
</head>
<body>
<h1>worldmodels play: act inside the dream</h1>
<div id="model">loading...</div>
<div class="layout">
<div>
<div class="panels">
  <figure><img id="dream" alt="dreamed frame"><figcaption>dream (model.decode of the dream state)</figcaption></figure>
  <figure id="real-fig" hidden><img id="real" alt="real frame"><figcaption id="real-label">real</figcaption></figure>
  <figure id="error-fig" hidden><img id="error" alt="error"><figcaption>|dream - real| x4</figcaption></figure>
</div>
<div class="row">
  <table class="readout">
    <tr><td>step</td><td id="step">-</td></tr>
    <tr><td>acted by</td><td id="by">-</td></tr>
    <tr><td>action</td><td id="action">-</td></tr>
    <tr><td>predicted reward</td><td id="reward">-</td></tr>
    <tr><td>P(continue)</td><td id="cont">-</td></tr>
    <tr><td>predicted return</td><td id="return">-</td></tr>
    <tr class="real-only" hidden><td>real reward</td><td id="real-reward">-</td></tr>
    <tr class="real-only" hidden><td>real return</td><td id="real-return">-</td></tr>
    <tr class="real-only" hidden><td>pixel error (MSE)</td><td id="error-value">-</td></tr>
    <tr><td>model step</td><td id="ms">-</td></tr>
  </table>
  <div>
    <canvas id="plot" width="320" height="130"></canvas>
    <div class="keys"><span style="color:#06c">predicted reward</span>
      <span class="real-only" hidden>, <span style="color:#e80">real reward</span></span></div>
  </div>
</div>
</div>
<div>
  <fieldset id="continuous" hidden><legend>action (continuous)</legend>
    <div class="dpad">
      <span></span><button id="btn-up" data-dim="1" data-sign="1" title="ArrowUp: dim 1 +">&uarr;</button><span></span>
      <button id="btn-left" data-dim="0" data-sign="-1" title="ArrowLeft: dim 0 -">&larr;</button>
      <button id="btn-noop" title="space: no action">&middot;</button>
      <button id="btn-right" data-dim="0" data-sign="1" title="ArrowRight: dim 0 +">&rarr;</button>
      <span></span><button id="btn-down" data-dim="1" data-sign="-1" title="ArrowDown: dim 1 -">&darr;</button><span></span>
    </div>
    <div class="slider">strength <input id="strength" type="range" min="0" max="1" step="0.05" value="1">
      <span id="strength-value">1.00</span></div>
    <div id="sliders"></div>
    <button id="btn-sliders" title="Enter">step with the sliders</button>
  </fieldset>
  <fieldset id="discrete" hidden><legend>action (discrete)</legend><div class="discrete" id="discrete-buttons"></div></fieldset>
  <fieldset><legend>reset (R)</legend>
    <select id="source"></select>
    <div id="data-pick" hidden>episode <input id="episode" type="number" min="0" value="0">
      frame <input id="frame" type="number" min="0"></div>
    <button id="btn-reset">reset</button>
  </fieldset>
  <fieldset id="agent-box" hidden><legend>agent (A)</legend>
    <label><input id="agent-on" type="checkbox"> the agent drives</label>
    sees <select id="sees"></select>
    every <input id="agent-delay" type="number" min="0" value="100"> ms
    <div class="keys" id="agent-how"></div>
  </fieldset>
</div>
</div>
<p id="status"></p>
<p class="keys">Keys: <kbd>&larr;</kbd><kbd>&rarr;</kbd> action dim 0 -/+, <kbd>&uarr;</kbd><kbd>&darr;</kbd> dim 1 +/-
  (hold to keep stepping), <kbd>Enter</kbd> the sliders' action, <kbd>space</kbd> no action, <kbd>1</kbd>..<kbd>9</kbd>
  <kbd>0</kbd> discrete actions 0..9, <kbd>R</kbd> reset, <kbd>A</kbd> agent on/off.</p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const ARROWS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"]);
let info = null, busy = false, pending = null, agentOn = false, agentTimer = null;
const held = new Set();
let history = [], startLabel = null;

function fmt(x, digits = 3) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }
function say(text) { $("status").textContent = text || ""; }

function post(path, body) {
  // one request in flight; the latest one asked for meanwhile waits for it
  if (busy) { pending = [path, body]; return; }
  busy = true;
  fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) })
    .then(async (r) => {
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || r.statusText);
      return data;
    })
    .then((data) => { if (path === "/api/policy") showPolicy(data); else show(data); say(""); })
    .catch((e) => { say(e.message); if (path === "/api/step") stopAgent(); })
    .finally(() => {
      busy = false;
      if (pending) { const [p, b] = pending; pending = null; post(p, b); }
      else if (agentOn) scheduleAgent();
    });
}

function show(d) {
  $("dream").src = d.dream;
  $("step").textContent = d.t;
  $("by").textContent = d.by;
  $("action").textContent = d.action ? "[" + d.action.map((a) => fmt(a, 2)).join(", ") + "]" : "-";
  $("reward").textContent = fmt(d.reward);
  $("cont").textContent = fmt(d.cont);
  $("return").textContent = fmt(d.return);
  $("ms").textContent = fmt(d.dream_ms, 1) + " ms";
  const real = d.real || null;
  if (d.by === "reset") {
    startLabel = real ? real.label : null;
    if (d.episode !== undefined) { $("episode").value = d.episode; $("frame").value = d.frame; }
  }
  // after a reset from data, the frame the dream started from stays in view (without an error: nothing to match)
  $("real-fig").hidden = !real && !startLabel;
  $("error-fig").hidden = !real;
  for (const el of document.querySelectorAll(".real-only")) el.hidden = !(real && real.return !== undefined);
  if (!real && startLabel) $("real-label").textContent = "started from " + startLabel + " (" + d.t + " steps ago)";
  if (real) {
    $("real").src = real.frame;
    $("error").src = real.error_frame;
    $("real-label").textContent = real.label;
    $("real-reward").textContent = fmt(real.reward);
    $("real-return").textContent = fmt(real.return);
    $("error-value").textContent = fmt(real.error, 4);
  }
  if (d.by === "reset") history = [];
  history.push([d.reward, real && real.reward !== undefined ? real.reward : null]);
  if (history.length > 200) history.shift();
  plot();
}

function plot() {
  const c = $("plot"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#ccc"; g.strokeRect(0, 0, c.width, c.height);
  const values = history.flat().filter((v) => v !== null);
  if (!values.length) return;
  // at least one unit of reward tall: a model's near-zero noise is not drawn as spikes
  const lo = Math.min(0, ...values), hi = Math.max(lo + 1, ...values);
  const x = (i) => 4 + (i * (c.width - 8)) / Math.max(1, history.length - 1);
  const y = (v) => c.height - 4 - ((v - lo) * (c.height - 8)) / (hi - lo);
  [["#06c", 0], ["#e80", 1]].forEach(([color, k]) => {
    g.strokeStyle = color; g.beginPath();
    let started = false;
    history.forEach((h, i) => {
      if (h[k] === null) return;
      if (started) g.lineTo(x(i), y(h[k])); else { g.moveTo(x(i), y(h[k])); started = true; }
    });
    g.stroke();
  });
}

function step(action) { post("/api/step", { action: action }); }

function sliderAction() {
  return Array.from(document.querySelectorAll("#sliders input")).map((s) => Number(s.value));
}

function keyAction() {
  const a = new Array(info.action_dim).fill(0), s = Number($("strength").value);
  const dir = (minus, plus) => (held.has(plus) ? 1 : 0) - (held.has(minus) ? 1 : 0);
  if (info.action_dim > 0) a[0] = s * dir("ArrowLeft", "ArrowRight");
  if (info.action_dim > 1) a[1] = s * dir("ArrowDown", "ArrowUp");
  return a;
}

function reset() {
  const body = { source: $("source").value };
  if (body.source === "data") { body.episode = $("episode").value; body.frame = $("frame").value; }
  post("/api/reset", body);
}

function scheduleAgent() {
  clearTimeout(agentTimer);
  agentTimer = setTimeout(() => { if (agentOn) post("/api/step", {}); }, Number($("agent-delay").value) || 0);
}
function setAgent(on) { post("/api/policy", { on: on, sees: $("sees").value }); }
function stopAgent() { if (agentOn) { agentOn = false; $("agent-on").checked = false; setAgent(false); } }
function showPolicy(p) {
  agentOn = p.on; $("agent-on").checked = p.on; $("agent-how").textContent = p.how || "";
  if (agentOn) scheduleAgent();
}

function build() {
  const space = info.action_dim + "-dim " + (info.discrete ? "discrete" : "continuous") + " actions";
  $("model").textContent = info.family + " from " + info.ckpt + ": " + space + ", " + info.image_size + "px" +
    (info.env ? "; env " + info.env : "") + (info.data ? "; data " + info.data : "") +
    (info.agent ? "; agent " + info.agent : "");
  if (info.discrete) {
    $("discrete").hidden = false;
    for (let i = 0; i < info.action_dim; i++) {
      const b = document.createElement("button");
      b.textContent = i; b.id = "btn-action-" + i; b.title = i < 10 ? "key " + ((i + 1) % 10) : "";
      b.onclick = () => step(i);
      $("discrete-buttons").appendChild(b);
    }
  } else {
    $("continuous").hidden = false;
    for (let i = 0; i < info.action_dim; i++) {
      const row = document.createElement("div");
      row.className = "slider";
      row.innerHTML = "dim " + i + ' <input type="range" min="-1" max="1" step="0.05" value="0"> <span>0.00</span>';
      const input = row.querySelector("input"), label = row.querySelector("span");
      input.oninput = () => { label.textContent = Number(input.value).toFixed(2); };
      $("sliders").appendChild(row);
    }
    for (const id of ["btn-left", "btn-right", "btn-up", "btn-down"]) {
      const b = $(id), dim = Number(b.dataset.dim);
      if (dim >= info.action_dim) { b.disabled = true; continue; }
      b.onclick = () => {
        const a = new Array(info.action_dim).fill(0);
        a[dim] = Number(b.dataset.sign) * Number($("strength").value);
        step(a);
      };
    }
    $("btn-noop").onclick = () => step(null);
    $("btn-sliders").onclick = () => step(sliderAction());
    $("strength").oninput = () => { $("strength-value").textContent = Number($("strength").value).toFixed(2); };
  }
  for (const s of info.sources) {
    const o = document.createElement("option");
    o.value = s; o.textContent = { data: "a data frame", env: "the live env", initial: "the model's initial state" }[s];
    $("source").appendChild(o);
  }
  $("source").value = info.source;
  const dataPick = () => { $("data-pick").hidden = $("source").value !== "data"; };
  $("source").onchange = dataPick; dataPick();
  if (info.episodes.length) {
    $("episode").max = info.episodes.length - 1;
    $("episode").value = info.episode === null ? 0 : info.episode;
    $("frame").value = info.frame === null ? "" : info.frame;
  }
  $("btn-reset").onclick = reset;
  if (info.agent) {
    $("agent-box").hidden = false;
    for (const s of info.sees) {
      const o = document.createElement("option");
      o.value = s; o.textContent = s === "dream" ? "the dream" : "the real env";
      $("sees").appendChild(o);
    }
    $("agent-how").textContent = info.policy;
    $("agent-on").onchange = () => setAgent($("agent-on").checked);
    $("sees").onchange = () => setAgent($("agent-on").checked);
  }
}

function typing(e) {
  const t = e.target;
  return (t.tagName === "INPUT" && (t.type === "number" || t.type === "text")) || t.tagName === "SELECT";
}

document.addEventListener("keydown", (e) => {
  if (!info || typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (ARROWS.has(k)) {
    e.preventDefault();
    held.add(k);
    if (!info.discrete) step(keyAction());
  } else if (k === " ") { e.preventDefault(); step(null); }
  else if (k === "Enter" && !info.discrete) { e.preventDefault(); step(sliderAction()); }
  else if (k === "r" || k === "R") { e.preventDefault(); reset(); }
  else if ((k === "a" || k === "A") && info.agent) { e.preventDefault(); setAgent(!agentOn); }
  else if (info.discrete && /^[0-9]$/.test(k)) {
    const index = k === "0" ? 9 : Number(k) - 1;
    if (index < info.action_dim) { e.preventDefault(); step(index); }
  }
});
document.addEventListener("keyup", (e) => held.delete(e.key));
window.addEventListener("blur", () => held.clear());

fetch("/api/info").then((r) => r.json()).then((d) => { info = d; build(); reset(); })
  .catch((e) => say("cannot reach the server: " + e.message));
</script>
</body>
</html>
"""
