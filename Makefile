# Two commands are the contract (see README): `make demo` and `make test`.
# Both build .venv from nothing on a fresh Debian 12 / Python 3.11 machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: demo test venv clean-shm

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt setup.py
	@# open3d cannot import without libusb; install it only when missing.
	@if ! ldconfig -p | grep -q libusb-1.0.so.0; then \
		apt-get update -qq && apt-get install -y -qq libusb-1.0-0; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --no-cache-dir -q --no-deps --no-build-isolation -e .
	@# librosa's numba JIT costs ~20 s on first use; pay it once here, not in every test.
	$(PY) -c "import numpy as np, librosa; librosa.feature.melspectrogram(y=np.zeros(16000, np.float32), sr=16000)"
	touch $(STAMP)

# colcon for the colcon-build tests, in a venv of its own (it pins pytest plugins and empy).
COLCON_VENV  := $(VENV)/colcon
COLCON_STAMP := $(COLCON_VENV)/.installed

$(COLCON_STAMP): requirements-colcon.txt $(STAMP)
	test -x $(COLCON_VENV)/bin/python || $(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install --no-cache-dir -q -r requirements-colcon.txt
	touch $(COLCON_STAMP)

# The real `ros2` CLI and `ros2 launch` (not on PyPI) for the tests that drive the graph with the
# tools users run: ../shared/rostools beside the project, installed into a venv that sees this one.
ROSTOOLS_KIT   := ../shared/rostools
ROSTOOLS_VENV  := $(VENV)/rostools
ROSTOOLS_STAMP := $(ROSTOOLS_VENV)/.installed

$(ROSTOOLS_STAMP): $(STAMP)
	@if [ -x $(ROSTOOLS_KIT)/install.sh ]; then \
		$(ROSTOOLS_KIT)/install.sh $(PY) $(ROSTOOLS_VENV) && touch $(ROSTOOLS_STAMP); \
	else echo "note: $(ROSTOOLS_KIT) not found; the ros2 CLI tests will be skipped"; fi

demo: $(STAMP)
	$(VENV)/bin/admn demo

test: $(STAMP) $(COLCON_STAMP) $(ROSTOOLS_STAMP)
	COLCON=$(abspath $(COLCON_VENV))/bin/colcon $(PY) -m pytest -n 2 tests
	@$(MAKE) --no-print-directory clean-shm

clean-shm:
	@# SIGKILLed DDS participants leave shared-memory segments behind.
	-@$(PY) $(VENV)/tools/fastdds/fastdds.py shm clean >/dev/null 2>&1 || true
