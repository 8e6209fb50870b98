"""The live loss chart (web/train_loss.js) in ComfyUI's real frontend: progress events reach the node, it draws
without errors, and the saved workflow gains no extra widget values."""

import pytest
from browser import frontend

pytestmark = pytest.mark.browser  # make test-browser

ADD_NODE_JS = """
() => {
  const node = window.LiteGraph.createNode("ImageAlchemy_TrainSubjectLoRA");
  window.app.graph.add(node);
  return {id: node.id, height: node.size[1], widgets: node.widgets.length,
          values: node.serialize().widgets_values.length};
}
"""

SEND_JS = """
async ([id, events]) => {
  const { api } = await import("/scripts/api.js");
  for (const e of events) api.dispatchCustomEvent("image_alchemy.train_progress", { node: String(id), ...e });
  window.app.canvas.draw(true, true);
  const node = window.app.graph.getNodeById(id);
  return {state: node.imageAlchemyLoss, height: node.size[1], values: node.serialize().widgets_values.length};
}
"""


def test_loss_chart_follows_progress_events(comfy):
    with frontend(comfy) as ui:
        added = ui.page.evaluate(ADD_NODE_JS)
        steps = [
            {"phase": "step", "step": i, "steps": 4, "loss": 1.0 / i, "lr": 1e-4, "eta_s": 4 - i} for i in range(1, 4)
        ]
        live = ui.page.evaluate(SEND_JS, [added["id"], [{"phase": "start", "steps": 4}, *steps]])
        assert live["state"]["losses"] == [1.0, 0.5, 1.0 / 3] and live["state"]["step"] == 3
        assert live["height"] > added["height"]  # room made for the chart
        done = ui.page.evaluate(SEND_JS, [added["id"], [{"phase": "done", "losses": [1.0, 0.5, 0.4, 0.3]}]])
        assert done["state"]["phase"] == "done" and done["state"]["losses"] == [1.0, 0.5, 0.4, 0.3]
        assert done["values"] == added["values"]  # nothing extra in the saved workflow
        assert ui.our_errors() == []
