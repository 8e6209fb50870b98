"""Does `pip install -r requirements.txt` need a compiler anywhere? Resolves it with wheels only for each target.

For each platform (manylinux x86_64, macOS arm64, Windows amd64) and CPython version it runs
`pip install --dry-run --only-binary=:all: --platform ... --python-version ... --target TMP --report R.json`:
pip resolves against PyPI as that machine would and fails when some requirement has no wheel there (it reads
the wheels' metadata, not the wheels). `--platform` only changes wheel tags: pip still evaluates environment
markers (`platform_system == "Linux"`, torch's CUDA wheels) for this machine, so pip runs here with its marker
environment set to the target's. This machine's pip settings (a local torch cap, local indexes) are left out:
the check sees what a user's pip sees. Prints one `target: result` line each; exits 1 when any fails.

Run: `make check-wheels` or `.venv/bin/python scripts/check_wheels.py [--python 3.12 ...]` (needs PyPI).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Wheel tags each target accepts: Linux as a glibc 2.35 distribution (Ubuntu 22.04) takes manylinux_2_17 … 2_35
# (pip does not widen a manylinux_2_x tag by itself); pip widens a macOS version to the older ones.
PLATFORMS = {
    "manylinux x86_64": [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + ["manylinux2014_x86_64"],
    "macOS arm64": ["macosx_14_0_arm64"],
    "Windows amd64": ["win_amd64"],
}
MARKERS = {
    "manylinux x86_64": {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    },
    "macOS arm64": {
        "sys_platform": "darwin",
        "platform_system": "Darwin",
        "platform_machine": "arm64",
        "os_name": "posix",
    },
    "Windows amd64": {
        "sys_platform": "win32",
        "platform_system": "Windows",
        "platform_machine": "AMD64",
        "os_name": "nt",
    },
}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def pip_with_markers(markers: dict, pip_args: list[str]) -> int:
    """pip's main with its environment markers replaced by a target machine's (runs in a child process)."""
    from pip._internal.cli.main import main as pip_main
    from pip._vendor.packaging import markers as pip_markers

    target = {**pip_markers.default_environment(), **markers}
    pip_markers.default_environment = lambda: dict(target)
    return pip_main(pip_args)


def resolve(label: str, python: str, requirements: Path, work: Path) -> tuple[bool, str]:
    report = work / f"{label.replace(' ', '_')}-{python}.json"
    markers = {
        **MARKERS[label],
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    abi = "cp" + python.replace(".", "")
    pip_args = [
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *[a for p in PLATFORMS[label] for a in ("--platform", p)],
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--target",
        str(work / "target"),
        "--report",
        str(report),
        "-r",
        str(requirements),
    ]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():  # the system's CAs, as this machine's pip uses
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    run = subprocess.run(
        [sys.executable, __file__, "--pip-child", json.dumps(markers), *pip_args],
        capture_output=True,
        text=True,
        env=env,
    )
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if line.startswith("ERROR")] or run.stderr.splitlines()
        return False, " / ".join(lines[-3:])
    installs = json.loads(report.read_text())["install"]
    not_wheels = [i["metadata"]["name"] for i in installs if not i["download_info"]["url"].endswith(".whl")]
    if not_wheels:
        return False, f"not wheels: {', '.join(not_wheels)}"
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    shown = ", ".join(
        f"{n} {names[n]}" for n in ("torch", "opencv-python-headless", "scikit-image", "scipy") if n in names
    )
    return True, f"{len(installs)} wheels ({shown})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pip-child"]:
        return pip_with_markers(json.loads(argv[1]), argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help=f"CPython version(s) (default: {' '.join(PYTHONS)})")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for python in args.python or PYTHONS:
            for label in PLATFORMS:
                ok, detail = resolve(label, python, args.requirements, Path(tmp))
                failed += not ok
                print(f"{label} CPython {python}: {'OK' if ok else 'FAIL'} {detail}", flush=True)
    print(f"requirements.txt wheels-only: {'OK' if not failed else f'{failed} target(s) FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
