"""Offline evaluation CLI: `python -m evaluation …` run from the pack root (see evaluation/cli.py).

Reads image folders, calls the pure metrics in alchemy/ (shared with the ComfyUI node), writes CSV and JSON.
Imports no ComfyUI code and not the pack's `nodes` package.
"""
