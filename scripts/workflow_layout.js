// Builds one example workflow in ComfyUI's frontend and lays it out from the nodes' real sizes.
// Called by scripts/build_example_workflows.py with a spec from scripts/workflow_specs.py:
//   nodes:  {key, type, group?, col, row, widgets, links, size?, properties?}; col orders columns inside a group, row orders
//           nodes inside a column (both are ranks, not coordinates);
//   groups: [{key, title, color}]; layout: rows of block keys (a group, or a node outside any group);
//   view:   the window the saved view is made for, the margins its side and top bars cover, the minimap's corner;
//   requires_comfyui?: the ComfyUI version whose core nodes the workflow uses (saved in extra.image_alchemy);
//   showsImages, previewHeight, growsBelow: the node types that show images after a run, the height the frontend's
//           image preview takes, and how far nodes of a type grow while running.
// Only stable LiteGraph API: createNode, graph.add, node.pos/size/getBounding, LGraphGroup pos/size.
async (spec) => {
  const app = window.app, LG = window.LiteGraph, graph = app.graph;
  const NODE_GAP = 40, COLUMN_GAP = 60, GROUP_GAP = 40, GROUP_PAD = 20, GRID = 10, WIDTH_STEP = 50,
        GROUP_FONT = 24;
  const snap = (v, step = GRID) => Math.ceil(v / step) * step;
  graph.clear();

  const made = {};
  for (const n of spec.nodes) {
    const node = LG.createNode(n.type);
    if (!node) throw new Error("unknown node type " + n.type);
    if (n.title) node.title = n.title;
    if (n.properties) Object.assign(node.properties, n.properties);  // e.g. models: the missing-models dialog's
    graph.add(node);
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const w = (node.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(n.type + " has no widget " + name);
      w.value = value;
    }
    made[n.key] = node;
  }
  for (const n of spec.nodes) {
    for (const [input, [srcKey, slot]] of Object.entries(n.links || {})) {
      const dst = made[n.key], src = made[srcKey];
      const idx = dst.findInputSlot(input);
      if (idx < 0) throw new Error(n.type + " has no input " + input);
      if (!src.connect(slot, dst, idx))
        throw new Error("could not link " + srcKey + "." + slot + " -> " + n.key + "." + input);
    }
  }
  // Sizes after linking: at least what the title, slots and widgets need, plus, on nodes that show images after a
  // run, the frontend's image preview (it would grow the node by that much over the one below). Widths are rounded
  // up to whole steps: frontend versions measure text a few pixels apart, and the saved layout must hold in both.
  for (const n of spec.nodes) {
    const node = made[n.key], need = node.computeSize();
    if (spec.showsImages.includes(n.type)) need[1] += spec.previewHeight;
    const want = n.size || node.size;
    node.setSize([snap(Math.max(want[0], need[0]), WIDTH_STEP), snap(Math.max(want[1], need[1]))]);
  }

  // A node's box as the frontend draws it: title bar, slots and selection outline included.
  const box = (node) => {
    if (node.updateArea) node.updateArea(app.canvas.ctx);
    return Array.from(node.getBounding([0, 0, 0, 0], true));
  };
  const moveBoxTo = (node, x, y) => {
    const b = box(node);
    node.pos = [node.pos[0] + x - b[0], node.pos[1] + y - b[1]];
  };

  // Inside a block: columns left to right, each as wide as its widest node; nodes stacked top-down in row order.
  const blocks = {};
  const blockOf = (n) => n.group || n.key;
  for (const n of spec.nodes) (blocks[blockOf(n)] ||= []).push(n);
  const blockSize = {};
  for (const [key, members] of Object.entries(blocks)) {
    const cols = [...new Set(members.map(n => n.col))].sort((a, b) => a - b);
    let x = 0, height = 0;
    for (const col of cols) {
      const inCol = members.filter(n => n.col === col).sort((a, b) => a.row - b.row);
      let y = 0, width = 0;
      for (const n of inCol) {
        moveBoxTo(made[n.key], x, y);
        const b = box(made[n.key]);
        y = snap(y + b[3] + (spec.growsBelow[n.type] || 0) + NODE_GAP);
        width = Math.max(width, b[2]);
      }
      height = Math.max(height, y - NODE_GAP);
      x = snap(x + width + COLUMN_GAP);
    }
    blockSize[key] = [x - COLUMN_GAP, height];
  }

  // Groups frame their block with padding and a title bar; blocks are placed row by row.
  const groupSpec = Object.fromEntries((spec.groups || []).map(g => [g.key, g]));
  const frames = [];
  let top = 0;
  for (const row of spec.layout) {
    let left = 0, rowHeight = 0;
    for (const key of row) {
      if (!blocks[key]) throw new Error("layout names " + key + ", which is neither a group nor a node");
      const g = groupSpec[key];
      let [w, h] = blockSize[key], inner = [left, top];
      if (g) {
        const group = new LG.LGraphGroup(g.title);
        if (g.color) group.color = LG.LGraphCanvas.node_colors[g.color].groupcolor;
        group.font_size = GROUP_FONT;  // saved with the group: the same title bar in every frontend version
        const titleHeight = GROUP_FONT * 1.4;
        inner = [left + GROUP_PAD, snap(top + titleHeight + GROUP_PAD)];
        w = snap(w + 2 * GROUP_PAD);
        h = inner[1] - top + snap(h + GROUP_PAD);
        group.pos = [left, top];
        group.size = [w, h];
        graph.add(group);
        frames.push([left, top, w, h]);
      }
      for (const n of blocks[key]) {
        const node = made[n.key];
        node.pos = [node.pos[0] + inner[0], node.pos[1] + inner[1]];
        if (!g) frames.push(box(node));
      }
      left = snap(left + w + GROUP_GAP);
      rowHeight = Math.max(rowHeight, h);
    }
    top = snap(top + rowHeight + GROUP_GAP);
  }
  const placed = Object.keys(blocks).filter(k => !spec.layout.flat().includes(k));
  if (placed.length) throw new Error("blocks missing from the layout: " + placed.join(", "));

  // Saved view: the whole graph, from the top left of the part of the window the side and top bars leave free, and
  // zoomed out until no node is under the minimap in the bottom right corner.
  const v = spec.view;
  const x0 = Math.min(...frames.map(f => f[0])), y0 = Math.min(...frames.map(f => f[1]));
  const x1 = Math.max(...frames.map(f => f[0] + f[2])), y1 = Math.max(...frames.map(f => f[1] + f[3]));
  const freeW = v.width - v.left - v.right, freeH = v.height - v.top - v.bottom;
  const boxes = Object.values(made).map(box);
  const underMinimap = (s) => boxes.some(b => (b[0] + b[2] - x0) * s + v.left > v.width - v.minimap[0]
                                           && (b[1] + b[3] - y0) * s + v.top > v.height - v.minimap[1]);
  let scale = Math.floor(Math.min(1, freeW / (x1 - x0), freeH / (y1 - y0)) * 100) / 100;
  while (scale > 0.1 && underMinimap(scale)) scale = Math.round((scale - 0.01) * 100) / 100;
  const offset = [Math.ceil(v.left / scale - x0), Math.ceil(v.top / scale - y0)];

  // Through JSON so undefined fields are dropped, not saved as null (the frontend's schema rejects nulls).
  const saved = JSON.parse(JSON.stringify(graph.serialize()));
  saved.extra = {...(saved.extra || {}), ds: {scale, offset}};
  // Workflows that use core nodes of newer ComfyUI versions say which version they need.
  if (spec.requires_comfyui) saved.extra.image_alchemy = {requires_comfyui: spec.requires_comfyui};
  return saved;
}
