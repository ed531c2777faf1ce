# intowork.pgops: `make demo` shows it, `make test` proves it. Both set up a new machine first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup demo demo-down test lint sanity pytest molecule clean

setup:
	./tools/setup.sh

demo: setup
	./tools/demo.sh

demo-down:
	./tools/demo.sh down

# lint and sanity side by side (one core each; each one's output printed whole when it ends), then the suites.
test: setup
	$(MAKE) --no-print-directory -j2 --output-sync=target lint sanity
	$(MAKE) --no-print-directory pytest molecule

# The linter installs the collection from disk into a path of its own; with .collections (ansible.cfg) also
# on the path it would find two copies and warn.
lint:
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.ansible/collections ansible-lint

sanity:
	./tools/sanity.sh

pytest:
	python -m pytest -n 2 --durations=30 tests

molecule:
	./tools/molecule.sh

clean:
	if [ -x $(VENV)/python ]; then ./tools/demo.sh down; fi
	rm -rf .venv .venv-bookshelf .collections build reports backups .pytest_cache
