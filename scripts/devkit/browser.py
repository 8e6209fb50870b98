"""ComfyUI's real frontend in headless Chromium (Debian's package), driven by playwright (the browser tests and
scripts/build_example_workflows.py). Never shipped."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import requests

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]
PACK_URL_PART = "comfyui-image-alchemy"
# The window the example workflows' saved views show the whole graph in, the margins of it that the frontend's side
# bar, workflow tabs, floating menus and zoom controls cover, and the bottom right corner its minimap covers (when
# shown; it is by default).
WORKFLOW_VIEW = dict(width=1920, height=1080, left=70, top=130, right=30, bottom=70, minimap=[260, 260])


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("No chromium on PATH: install Debian's 'chromium' package (make provision does it as root).")
    return path


# Opens a workflow as a user does (or, given null, keeps the graph on the canvas), waits until the frontend has
# applied its saved view, draws a frame and returns the boxes the frontend itself has for every node (title bar, slots
# and selection outline included) and group, in graph units and in window pixels.
LAYOUT_JS = """async (wf) => {
  const app = window.app, ds = app.canvas.ds, want = wf && (wf.extra || {}).ds;
  if (wf) await app.loadGraphData(wf);
  const applied = () => want && ds.scale === want.scale && ds.offset[0] === want.offset[0]
    && ds.offset[1] === want.offset[1];
  for (let i = 0; wf && i < 100 && !applied(); i++) await new Promise(r => setTimeout(r, 50));
  const graph = app.graph;
  app.canvas.draw(true, true);
  const at = app.canvas.canvas.getBoundingClientRect();
  const onScreen = ([x, y, w, h]) => {
    const [x0, y0] = ds.convertOffsetToCanvas([x, y]), [x1, y1] = ds.convertOffsetToCanvas([x + w, y + h]);
    return [x0 + at.x, y0 + at.y, x1 - x0, y1 - y0];
  };
  const nodes = graph.nodes.map(n => {
    const box = Array.from(n.getBounding([0, 0, 0, 0], true));
    return {id: n.id, type: n.type, title: n.title, box, screen: onScreen(box)};
  });
  const groups = (graph.groups || graph._groups).map(g => {
    const box = [g.pos[0], g.pos[1], g.size[0], g.size[1]];
    return {title: g.title, box, screen: onScreen(box), titleHeight: g.titleHeight ?? g.font_size * 1.4};
  });
  return {scale: ds.scale, offset: [ds.offset[0], ds.offset[1]], nodes, groups};
}"""


class FrontendPage:
    """One page of the frontend, with the console and page errors that mention our extension collected."""

    def __init__(self, page, server):
        self.page = page
        self.server = server
        self.messages: list[tuple[str, str, str]] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e), str(getattr(e, "stack", "")))))

    def open(self) -> FrontendPage:
        # Mark the first-run tutorial as done so the template browser does not cover the canvas.
        requests.post(self.server.url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
        self.page.goto(self.server.url, wait_until="networkidle")
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
        return self

    def our_errors(self) -> list[str]:
        return [
            f"{kind}: {text} ({where})"
            for kind, text, where in self.messages
            if kind in ("error", "pageerror")
            and (PACK_URL_PART in where or PACK_URL_PART in text or "ImageAlchemy" in text)
        ]

    def load_workflow(self, workflow: dict) -> None:
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)

    def open_with_saved_view(self, workflow: dict) -> dict:
        return self.page.evaluate(LAYOUT_JS, workflow)

    def layout(self) -> dict:
        """The boxes of the graph on the canvas now, as open_with_saved_view returns them."""
        return self.page.evaluate(LAYOUT_JS, None)

    def alerts(self) -> list[str]:
        """Texts of the frontend's toast messages on screen (schema warnings, missing models, errors)."""
        return self.page.locator(".p-toast-message").all_inner_texts()

    def missing_node_types(self, workflow: dict) -> list[str]:
        return self.page.evaluate(
            "(wf) => wf.nodes.map(n => n.type).filter(t => !window.LiteGraph.registered_node_types[t])", workflow
        )

    def graph_to_prompt(self) -> dict:
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")


@contextmanager
def frontend(server, width: int = 1600, height: int = 1000, device_scale_factor: float = 1):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                viewport={"width": width, "height": height}, device_scale_factor=device_scale_factor
            )
            yield FrontendPage(page, server).open()
        finally:
            browser.close()
