# scenetool: `make test` sets everything up and runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The training folder follows one rule (python -m train fit --help): DATA=DIR when given,
# else $SCENETOOL_TRAIN_DATA, else data/intel/seg_train. Example: make train DATA=~/seg_train
DATA ?=
DATA_ARG := $(if $(DATA),--data $(DATA),)
# The shipped recipe has two stages (see exported/MODEL.md). Stage 1, run $(BASE_RUN):
# progressive resizing over 60 epochs with cutmix (about 3 hours alone on 2 CPU cores).
BASE_RUN ?= scenenet
RECIPE ?= --arch scenenet --image-size 64:10,96:20,128:20,150:10 --cutmix 1.0 --patience 0 \
	--ema 0.999 --swa-from 55
# Stage 2, run $(RUN), the one exported: from stage 1's last weights, STAGE2_EPOCHS epochs
# at 128 px whose learning rate restarts at 5e-4 every epoch and decays to zero; the mean
# of the weights at each epoch's end (SWA) is the model.
RUN ?= scenenet-swa
STAGE2_EPOCHS ?= 16
STAGE2 ?= --arch scenenet --image-size 128 --epochs $(STAGE2_EPOCHS) --lr 5e-4 --cycle 1 \
	--warmup 0 --swa-from 1 --cutmix 1.0 --patience 0
# The shipped model's validation split, so a retrained model is scored on the same images.
SPLIT ?= $(wildcard exported/val_split.txt)
SPLIT_ARG := $(if $(SPLIT),--split $(SPLIT),)

.PHONY: install test lint train export ship baselines bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[train,test,ray]'
	touch $@

install: $(VENV)/.installed

# The contact-sheet browser tests need chromium (.ci/run installs it); say so when they skip.
test: install
	@status=0; $(PY) -m pytest -q || status=$$?; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		echo "make test: chromium not found, so the browser tests were skipped (.ci/run installs it)"; \
	exit $$status

lint: install
	$(PY) -m ruff check scenetool train tests bench

# Each stage resumes when it was stopped part-way (its state.json exists).
train: install
	$(PY) -m train fit $(RECIPE) $(DATA_ARG) $(SPLIT_ARG) --name $(BASE_RUN) \
		$(if $(wildcard runs/$(BASE_RUN)/state.json),--resume,)
	$(PY) -m train fit $(STAGE2) $(DATA_ARG) $(SPLIT_ARG) --name $(RUN) \
		--init-from runs/$(BASE_RUN)/last.keras $(if $(wildcard runs/$(RUN)/state.json),--resume,)

# The study's two models, trained by the same pipeline for the model card's comparison.
baselines: install
	$(PY) -m train fit --arch seed-dense $(DATA_ARG) --name seed-dense --image-size 150 \
		--epochs 3 --lr 1e-3 $(SPLIT_ARG) \
		$(if $(wildcard runs/seed-dense/state.json),--resume,)
	$(PY) -m train fit --arch seed-cnn $(DATA_ARG) --name seed-cnn --image-size 150 \
		--epochs 3 --lr 1e-3 $(SPLIT_ARG) \
		$(if $(wildcard runs/seed-cnn/state.json),--resume,)

# Stage 2's epoch average (SWA), run at 128 px, the size it trained at: it scored best there
# of 128 to 160 px (chosen on the validation split, see exported/MODEL.md).
EXPORT_ARGS ?= --checkpoint swa --image-size 128
# Photos that are not scenes for the "not a scene" probe to learn from (only those whose
# PROVENANCE.tsv licence allows it) and be measured on; without them export falls back to a
# score that needs none. Example: make export OOD=~/ood-dev
OOD ?= $(wildcard ../shared/data/ood-dev)
OOD_ARG := $(if $(OOD),--negatives $(OOD) --others $(OOD),)

# Every candidate model measured so far (python -m train candidates), for the card's table.
CANDIDATES ?= $(wildcard exported/candidates.json)
CANDIDATES_ARG := $(if $(CANDIDATES),--candidates $(CANDIDATES),)

# Writes into the run's own folder (runs/$(RUN)/export/); the shipped model is untouched.
export: install
	$(PY) -m train export $(RUN) $(EXPORT_ARGS) $(OOD_ARG) $(CANDIDATES_ARG) \
		--card runs/$(RUN)/export/MODEL.md --compare-runs seed-dense,seed-cnn

# The one step that replaces the shipped model (scenetool/models/scenes.onnx), its card,
# figures and split (exported/) with runs/$(RUN)/export/; it says what it replaced.
ship: install
	$(PY) -m train ship $(RUN)

bench: install
	$(PY) -m bench

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
