"""What users type in the node search, as each node's ``search_aliases``: on ComfyUI versions whose V3 Schema
has the field (0.33 does); older ones (0.3.75) get nothing, so the pack still loads there."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

_SCHEMA_FIELDS = {f.name for f in dataclasses.fields(io.Schema)}


def search_aliases(*words: str) -> dict:
    """``io.Schema(..., **search_aliases("insert subject", ...))``."""
    return {"search_aliases": list(words)} if "search_aliases" in _SCHEMA_FIELDS else {}
