# The README's commands. Each target installs (or checks, in seconds) the environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
LOGDIR ?= work_dirs
export GREENMIM_VENV := $(abspath $(VENV))

.PHONY: install demo test test-slow benchmark benchmark-loader learning-signal tensorboard
install:
	bash tools/install.sh

demo: install  ## pretrain a tiny GreenMIM Swin on the photographs shipped with scikit-image
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) tools/train.py configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py

test: install  ## the test suite CI runs
	$(PY) -m pytest tests -q

test-slow: install  ## the long end-to-end checks kept out of the default run
	$(PY) -m pytest tests -q -m slow

benchmark: install  ## GreenMIM vs SimMIM training step, ratios side by side
	$(PY) tools/benchmark.py

benchmark-loader: install  ## input pipelines' CPU per image, bytes per image, cores per GPU
	$(PY) tools/benchmark.py --section loader --arch base --loader-images 200 --repeats 10

learning-signal: install  ## GreenMIM vs SimMIM vs random init at equal pretraining CPU time (~50 min)
	$(PY) tools/learning_signal.py

tensorboard: install  ## TensorBoard on the runs under $(LOGDIR) (make tensorboard LOGDIR=...)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)
