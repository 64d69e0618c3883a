# scenetool: `make test` sets everything up and runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The training folder: data/intel/seg_train (the Kaggle download), else the shared copy.
DATA ?= $(firstword $(wildcard data/intel/seg_train ../shared/data/intel/seg_train) data/intel/seg_train)
RUN ?= scenenet
# The shipped recipe: progressive resizing, 30 epochs (about 2 hours on 2 CPU cores).
RECIPE ?= --arch scenenet --image-size 64:8,96:10,128:8,150:4 --patience 8
# The shipped model's validation split, so a retrained model is scored on the same images.
SPLIT ?= $(firstword $(wildcard exported/val_split.txt) runs/split-$(notdir $(DATA)).txt)

.PHONY: install test lint train export baselines bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[train,test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check scenetool train tests bench

# Resumes the run when it was stopped part-way (its state.json exists).
train: install
	$(PY) -m train fit $(RECIPE) --data $(DATA) --split $(SPLIT) --name $(RUN) \
		$(if $(wildcard runs/$(RUN)/state.json),--resume,)

# The study's two models, trained by the same pipeline for the model card's comparison.
baselines: install
	$(PY) -m train fit --arch seed-dense --data $(DATA) --name seed-dense --image-size 150 \
		--epochs 3 --lr 1e-3 --split $(SPLIT) \
		$(if $(wildcard runs/seed-dense/state.json),--resume,)
	$(PY) -m train fit --arch seed-cnn --data $(DATA) --name seed-cnn --image-size 150 \
		--epochs 3 --lr 1e-3 --split $(SPLIT) \
		$(if $(wildcard runs/seed-cnn/state.json),--resume,)

# The fully trained (last) checkpoint, run at 172 px: trained on random crops at 150 px, the
# net sees objects larger than in whole images, so it scores best a little above its
# training size (FixRes; chosen on the validation split, see exported/MODEL.md).
EXPORT_ARGS ?= --checkpoint last --image-size 172

export: install
	$(PY) -m train export $(RUN) $(EXPORT_ARGS) --out scenetool/models/scenes.onnx \
		--card exported/MODEL.md --compare-runs seed-dense,seed-cnn
	cp runs/$(RUN)/split.txt exported/val_split.txt

bench: install
	$(PY) -m bench

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
