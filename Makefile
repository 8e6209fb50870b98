# Image Alchemy — every target provisions what it needs first (idempotent; seconds on a second run).
# COMFYUI picks the ComfyUI version, each with its own venv (their frontend packages differ):
#   0.33.0 (default)  .venv + .cache/comfyui                 the whole suite
#   0.3.75 (oldest)   .venv-0.3.75 + .cache/comfyui-0.3.75    by default only the tests that start a server
DEFAULT_COMFYUI := 0.33.0
COMFYUI ?= $(DEFAULT_COMFYUI)
ifeq ($(COMFYUI),$(DEFAULT_COMFYUI))
VENV := .venv
COMFY := .cache/comfyui
MARK ?=
else
VENV := .venv-$(COMFYUI)
COMFY := .cache/comfyui-$(COMFYUI)
MARK ?= server
endif
PY := $(VENV)/bin/python
PORT ?= 8188
MODELS ?=

.PHONY: provision lint test test-unit test-server test-browser demo serve generate bench bench-gpu bench-startup check-wheels clean toy-world

provision:
	@COMFYUI=$(COMFYUI) bash scripts/provision.sh

# The pytest script, not `python -m pytest`, which would put the repo root (and our nodes/) on sys.path.
# pytest exits 5 when it collected no test: a broken suite, reported as such. $(1): a marker expression.
define pytest_run
@IMAGE_ALCHEMY_COMFYUI=$(CURDIR)/$(COMFY) $(VENV)/bin/pytest -q tests $(if $(1),-m "$(1)") $(PYTEST_ARGS); rc=$$?; \
if [ $$rc -eq 5 ]; then echo "make $@: pytest collected no tests (broken suite)" >&2; exit 1; fi; exit $$rc
endef

# Everything (MARK: a pytest marker expression; on COMFYUI=0.3.75 `server` unless given).
test: provision
	$(call pytest_run,$(MARK))

# One layer each: no server (functions, trainer, CLI); a real ComfyUI over HTTP; ComfyUI's frontend in Chromium.
test-unit: provision
	$(call pytest_run,not server)

test-server: provision
	$(call pytest_run,server and not browser)

test-browser: provision
	$(call pytest_run,browser)

# ruff's import order, pyflakes and bugbear checks and its formatter (settings in pyproject.toml).
lint: provision
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: provision
	IMAGE_ALCHEMY_COMFYUI=$(CURDIR)/$(COMFY) $(PY) scripts/demo.py $(if $(MODELS),--models "$(MODELS)")

serve: provision
	@mkdir -p $(COMFY)/custom_nodes
	@ln -sfn "$(CURDIR)" $(COMFY)/custom_nodes/comfyui-image-alchemy
	cd $(COMFY) && ../../$(PY) main.py --cpu --listen 127.0.0.1 --port $(PORT)

# Generated files: the README node list, docs/nodes.md + web/docs help pages (from a real server's /object_info),
# then example_workflows/*.json + .jpg previews and subgraphs/*.json (built in the real frontend; needs chromium, a
# few minutes). Both scripts run the default ComfyUI (.cache/comfyui): the shipped files are that version's.
ifeq ($(COMFYUI),$(DEFAULT_COMFYUI))
generate: provision
	$(PY) scripts/node_reference.py
	$(PY) scripts/build_example_workflows.py
else
generate:
	@echo "make generate: the generated files come from ComfyUI $(DEFAULT_COMFYUI); run it without COMFYUI=$(COMFYUI)" >&2; exit 1
endif

# CPU benchmarks (ratios in one process); bench-gpu: full-size training of a family on a GPU (cuda, xpu, mps);
# bench-startup: the trainer's start-up on a full-size SDXL UNet (needs ~16 GB of free RAM, several minutes).
bench: provision
	@for f in $(filter-out %_gpu.py bench/train_startup.py,$(wildcard bench/*.py)); do echo "== $$f"; $(PY) $$f || exit 1; done

bench-gpu: provision
	$(PY) bench/train_gpu.py --family sdxl

bench-startup: provision
	$(PY) bench/train_startup.py

# The toy world's trained tiny models (toy_world/models, committed with their manifest): from scratch, on the CPU,
# seeded, one torch thread (same bytes on the same machine); about 10-15 minutes.
toy-world: provision
	rm -rf toy_world/models.new
	$(PY) -m toy_world.train --comfyui $(CURDIR)/$(COMFY) --out toy_world/models.new
	rm -rf toy_world/models && mv toy_world/models.new toy_world/models

# Does requirements.txt resolve to wheels only (no compiler) on Linux, macOS and Windows? Needs PyPI.
check-wheels: provision
	$(PY) scripts/check_wheels.py

clean:
	rm -rf .venv .venv-* .cache
