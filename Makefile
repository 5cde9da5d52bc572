# Quick start: `make demo` (the main job, embedded mode) and `make test` (the test suite).
# Both create .venv on first use (PyTorch + this package) and fetch Fashion-MNIST from Debian's package.
# `make container-test`: the image built with podman and run against this machine's PostgreSQL and Redis.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium

.PHONY: demo test install data clean container-image container-test

install: $(VENV)/.installed

# PyTorch's version is pinned in requirements-torch.txt only (the image installs from it too).
$(VENV)/.installed: pyproject.toml requirements-torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-torch.txt
	$(PY) -m pip install -q -e '.[test]' -c requirements-torch.txt
	touch $@

# Debian's package puts the four original files in /usr/share/datasets/fashion-mnist/; without it (not
# root, not Debian) l335q falls back to $$L335Q_DATA and then torchvision's download.
# The web tests drive Debian's chromium (/usr/bin/chromium) with Playwright; nothing downloads a browser.
data:
	@test -f $(FMNIST) || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q dataset-fashion-mnist || \
	  (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; } || \
	  echo "note: dataset-fashion-mnist not installed; l335q will try \$$L335Q_DATA, then a download"
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium || \
	  (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; } || \
	  echo "note: chromium not installed (run as root: apt-get install chromium); the web tests will fail"

demo: install data
	$(VENV)/bin/l335q demo

test: install data
	$(PY) -m pytest -q

# The image (podman, no registry needed: containers/build.sh), its smoke test (containers/smoke.sh) and
# docker-compose.yml brought up with local Redis and PostgreSQL images (containers/compose/up.sh).
container-image:
	bash containers/build.sh

container-test:
	bash containers/smoke.sh
	bash containers/compose/up.sh

clean:
	rm -rf $(VENV) .pytest_cache
