# Two commands are the contract (see README): `make demo` and `make test`.
# Both build .venv from nothing on a fresh Debian 12 / Python 3.11 machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: demo test test-fast venv msgs clean-shm

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

# admn_msgs, the package of admn_fusion's message types, built from its .msg files with the
# ROS 2 generators from pip and installed into the venv prefix: the typesupport libraries land in
# .venv/lib, where rclpy's loader looks, and the Python module in site-packages, so nothing needs
# an environment variable at run time. cmake, g++ and the Python headers come from apt when missing.
MSGS_STAMP := $(VENV)/.admn_msgs
MSGS_BUILD := $(VENV)/build/admn_msgs
MSGS_SRC   := $(wildcard admn_msgs/msg/*.msg) admn_msgs/CMakeLists.txt admn_msgs/package.xml

$(MSGS_STAMP): requirements-msgs.txt $(MSGS_SRC) $(STAMP)
	@if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || ! command -v make >/dev/null \
	    || ! $(PY) -c "import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then \
		apt-get update -qq && apt-get install -y -qq cmake g++ make python3-dev; fi
	$(PY) -m pip install --no-cache-dir -q -r requirements-msgs.txt
	rm -rf $(MSGS_BUILD)
	AMENT_PREFIX_PATH=$(abspath $(VENV)) CMAKE_PREFIX_PATH=$(abspath $(VENV)) cmake -S admn_msgs \
		-B $(MSGS_BUILD) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_TESTING=OFF -DPython3_EXECUTABLE=$(abspath $(PY)) --log-level=WARNING >/dev/null
	cmake --build $(MSGS_BUILD) -j2 >/dev/null
	cmake --install $(MSGS_BUILD) >/dev/null
	$(PY) -c "import admn_msgs.msg"
	touch $(MSGS_STAMP)

msgs venv: $(MSGS_STAMP)

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

demo: $(STAMP) $(MSGS_STAMP)
	$(VENV)/bin/admn demo

test: $(STAMP) $(MSGS_STAMP) $(COLCON_STAMP) $(ROSTOOLS_STAMP)
	COLCON=$(abspath $(COLCON_VENV))/bin/colcon $(PY) -m pytest -n 2 tests
	@$(MAKE) --no-print-directory clean-shm

# The developer's loop: no DDS graphs (marker ros), no colcon builds, training or long runs
# (marker slow). CI runs `make test`, which includes these.
test-fast: $(STAMP) $(MSGS_STAMP)
	$(PY) -m pytest -n 2 -m "not ros and not slow" tests

clean-shm:
	@# SIGKILLed DDS participants leave shared-memory segments behind.
	-@$(PY) $(VENV)/tools/fastdds/fastdds.py shm clean >/dev/null 2>&1 || true
