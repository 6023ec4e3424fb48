# `make demo` and `make test` set up everything they need on a fresh machine:
# the virtual environment, the package, and the offline Fashion-MNIST data.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LTBENCH := $(VENV)/bin/ltbench
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup data demo test clean slurm slurm-up slurm-down latex

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# pinned: these builds lie on local disk; an unpinned torch would download several GB
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

data: setup
	$(LTBENCH) fetch-data fashion_mnist_lt --allow-apt

demo: data
	$(LTBENCH) run --methods ce,focal --dataset fashion_mnist_lt --if 10,100 --preset quick
	$(LTBENCH) report
	@echo "ltbench is installed in $(VENV): run 'source $(VENV)/bin/activate' to type 'ltbench ...' (or call $(LTBENCH))"

test: data slurm latex
	$(PY) -m pytest -q

# Debian's Slurm + munge, so the Slurm tests run on a real single-node cluster (they start
# and stop it themselves); without root or apt the tests are skipped instead.
slurm:
	@scripts/slurm_cluster.sh install || echo "Slurm not installed (needs root and apt): the Slurm tests will be skipped"

# pdflatex with booktabs (Debian's texlive-latex-base and -recommended: about 15 MB to fetch),
# so the test that compiles every report .tex table runs; without root or apt it is skipped.
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended
latex:
	@command -v pdflatex >/dev/null \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEX_PACKAGES) >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $(TEX_PACKAGES) >/dev/null; } \
		|| echo "pdflatex not installed (needs root and apt): the LaTeX compile test will be skipped"

slurm-up: slurm
	scripts/slurm_cluster.sh start

slurm-down:
	scripts/slurm_cluster.sh stop

clean:
	rm -rf $(VENV) build *.egg-info
