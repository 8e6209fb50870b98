"""Test-only: records every run of ComfyUI's prestartup phase (main.py's module-level code) with its process id,
so tests can prove that starting the trainer does not run main.py again in the trainer process."""

import os

import folder_paths

with open(os.path.join(folder_paths.base_path, "prestartup_runs.log"), "a") as log:
    log.write(f"{os.getpid()}\n")
