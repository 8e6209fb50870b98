"""The GPU bench (bench/train_gpu.py) in its dry run: the same script, the family's tiny config on the CPU for a
few steps, so it is known to work the day a GPU is at hand."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_gpu.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_the_gpu_bench_dry_run_trains_each_family_on_the_cpu(family):
    run = _bench("--family", family, "--dry-run", "--optimizer", "prodigy")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    assert lines[f"{family}_device"] == "CPU" and lines[f"{family}_mixed_precision"] == "no"
    assert float(lines[f"{family}_train_it_per_s"]) > 0 and float(lines[f"{family}_unet_params_m"]) > 0
    assert f"{family}_train_peak_gpu_gb" not in lines  # no GPU memory on the CPU


def test_the_gpu_bench_names_its_families_and_needs_a_gpu_without_the_dry_run():
    unknown = _bench("--family", "sd3", "--dry-run")
    assert unknown.returncode == 2 and re.search(
        r"invalid choice: 'sd3' \(choose from '?sd15'?, '?sdxl", unknown.stderr
    )
    no_gpu = _bench("--family", "sdxl", "--device", "cpu")
    assert no_gpu.returncode == 1 and "needs a GPU (cuda, xpu or mps); --dry-run checks it on the CPU" in no_gpu.stderr
