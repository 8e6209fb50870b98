"""ComfyUI's real frontend in headless Chromium (Debian's package), driven by playwright. Test-only."""
from __future__ import annotations

import shutil
from contextlib import contextmanager

import requests

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
PACK_URL_PART = "comfyui-image-alchemy"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("No chromium on PATH: install Debian's 'chromium' package (make provision does it as root).")
    return path


class FrontendPage:
    """One page of the frontend, with the console and page errors that mention our extension collected."""

    def __init__(self, page, server):
        self.page = page
        self.server = server
        self.messages: list[tuple[str, str, str]] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e), str(getattr(e, "stack", "")))))

    def open(self) -> "FrontendPage":
        # Mark the first-run tutorial as done so the template browser does not cover the canvas.
        requests.post(self.server.url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
        self.page.goto(self.server.url, wait_until="networkidle")
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
        return self

    def our_errors(self) -> list[str]:
        return [f"{kind}: {text} ({where})" for kind, text, where in self.messages
                if kind in ("error", "pageerror") and (PACK_URL_PART in where or PACK_URL_PART in text
                                                       or "ImageAlchemy" in text)]

    def load_workflow(self, workflow: dict) -> None:
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)

    def alerts(self) -> list[str]:
        """Texts of the frontend's toast messages on screen (schema warnings, missing models, errors)."""
        return self.page.locator(".p-toast-message").all_inner_texts()

    def missing_node_types(self, workflow: dict) -> list[str]:
        return self.page.evaluate(
            "(wf) => wf.nodes.map(n => n.type).filter(t => !window.LiteGraph.registered_node_types[t])", workflow)

    def graph_to_prompt(self) -> dict:
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")


@contextmanager
def frontend(server, width: int = 1600, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield FrontendPage(page, server).open()
        finally:
            browser.close()
