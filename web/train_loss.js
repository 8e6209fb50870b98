// Live loss chart on the Train Subject LoRA node, fed by the server's "image_alchemy.train_progress" events
// ({node, phase: start|step|done|cached|warning, step, steps, loss, lr, eta_s, losses, text}); warnings (e.g. a
// token that splits into several) are written above the chart. Drawn on the node's canvas in
// onDrawForeground: no widget, so nothing is added to the saved workflow.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "ImageAlchemy_TrainSubjectLoRA";
const EVENT = "image_alchemy.train_progress";
const CHART_H = 110;
const MAX_POINTS = 2000; // enough for a smooth line; older points are thinned, not dropped

function thin(values) {
  if (values.length <= MAX_POINTS) return values;
  const out = [];
  for (let i = 0; i < values.length; i += 2) out.push(values[i]);
  return out;
}

function formatEta(seconds) {
  if (!(seconds >= 0)) return "";
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  return m ? `${m}m ${s}s left` : `${s}s left`;
}

function drawChart(node, ctx) {
  const state = node.imageAlchemyLoss;
  if (!state || node.flags?.collapsed) return;
  const pad = 8, w = node.size[0] - 2 * pad, top = node.size[1] - CHART_H - pad, h = CHART_H;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(pad, top, w, h);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#ddd";
  const last = state.losses.length ? state.losses[state.losses.length - 1] : null;
  const label = state.phase === "cached" ? "already trained (cached)"
    : `step ${state.step}/${state.steps}` + (last !== null ? `  loss ${last.toFixed(4)}` : "") +
      (state.phase === "step" ? `  ${formatEta(state.eta)}` : state.phase === "done" ? "  done" : "");
  ctx.fillText(label, pad + 4, top + 13);
  const warned = Boolean(state.warning);
  if (warned) { // second line, in orange; the chart moves down to make room
    ctx.fillStyle = "#ffb347";
    ctx.fillText(`⚠ ${state.warning}`.slice(0, Math.max(20, Math.floor(w / 6))), pad + 4, top + 27);
  }
  // One step is drawn as a flat line across the chart, not as a single point.
  const values = state.losses.length === 1 ? [state.losses[0], state.losses[0]] : state.losses;
  if (values.length > 1) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const x0 = pad + 4, y0 = top + (warned ? 34 : 20), cw = w - 8, ch = h - (warned ? 40 : 26);
    const span = hi > lo ? hi - lo : 1;
    // The line spans the share of the run done so far; the points are spread evenly over it.
    const n = Math.max(values.length - 1, 1), done = Math.min(1, state.steps ? state.step / state.steps : 1);
    ctx.strokeStyle = "#6fa8ff";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = x0 + cw * done * (i / n), y = y0 + ch - ((v - lo) / span) * ch;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = "#aaa";
    ctx.fillText(hi.toPrecision(3), x0 + cw - 40, y0 + 9);
    ctx.fillText(lo.toPrecision(3), x0 + cw - 40, y0 + ch);
  }
  ctx.restore();
}

function onProgress(event) {
  const data = event.detail || {};
  const node = app.graph?.getNodeById?.(Number(data.node)) ?? app.graph?.getNodeById?.(data.node);
  if (!node || node.type !== NODE_TYPE) return;
  if (!node.imageAlchemyLoss) {
    node.imageAlchemyLoss = { losses: [], step: 0, steps: 0, phase: "start", eta: null };
    node.setSize([node.size[0], node.size[1] + CHART_H + 8]);
  }
  const state = node.imageAlchemyLoss;
  if (data.phase === "warning") {
    state.warning = String(data.text || "");
    node.setDirtyCanvas(true, false);
    return;
  }
  if (data.phase === "start") Object.assign(state, { losses: [], step: 0, steps: data.steps, phase: "start" });
  if (data.phase === "step") {
    state.losses = thin([...state.losses, data.loss]);
    Object.assign(state, { step: data.step, steps: data.steps, eta: data.eta_s, phase: "step" });
  }
  if (data.phase === "done" || data.phase === "cached") {
    const losses = Array.isArray(data.losses) ? data.losses : state.losses;
    Object.assign(state, { losses: thin(losses), step: losses.length, steps: losses.length, phase: data.phase });
  }
  node.setDirtyCanvas(true, false);
}

app.registerExtension({
  name: "ImageAlchemy.TrainLossChart",
  setup() {
    api.addEventListener(EVENT, onProgress);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const draw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
      const result = draw?.apply(this, [ctx, ...rest]);
      drawChart(this, ctx);
      return result;
    };
  },
});
