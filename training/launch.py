"""The first code of the trainer process the node starts (docs/DESIGN.md §5.1): ``multiprocessing`` (spawn)
runs this file with ``runpy.run_path``, with ``PACK_ROOT``, ``JOB_DIR``, ``EVENTS`` (the pipe end for progress)
and ``CONTROL`` (the node's stage messages, or None: training/staged.py) in its globals.

It is a plain script because the spawned interpreter knows the pack by no importable name: ComfyUI imports
custom nodes under path-derived names, and a safe-path interpreter (Windows portable's ``._pth``,
``PYTHONSAFEPATH``) puts no working folder on sys.path. So the pack root goes first on sys.path and the
trainer is imported as the top-level package ``training``, as ``python -m training`` from the pack root does.
"""

import sys

_root = globals()["PACK_ROOT"]
if sys.path[:1] != [_root]:
    sys.path.insert(0, _root)

from training.cli import run_child  # noqa: E402  (needs the path above)

raise SystemExit(run_child(globals()["JOB_DIR"], globals()["EVENTS"], globals().get("CONTROL")))
