#!/usr/bin/env bash
# Everything a new machine needs for the demo and the tests; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
# prometheus for promtool (the monitoring rules are checked by it), chromium-headless-shell for the
# test that opens the health report in a browser; sudo and the distribution's psycopg2 for the tests that
# run the backup program as an unprivileged account with the host's own Python, as production does;
# openssh-server for the loopback database host the remote scenario reaches over SSH (tools/ssh_host.py),
# python3-venv for the host_python role that makes the modules' environment there; pgbadger for the
# monitoring role's weekly log report; pgbackrest for physical backups, WAL archiving and point-in-time recovery.
APT_PACKAGES=(postgresql-15 postgresql-client-15 shellcheck prometheus chromium-headless-shell sudo python3-psycopg2
              openssh-server openssh-client python3-venv pgbadger pgbackrest)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # The sandbox starts its own servers: keep the package from creating and starting a system cluster.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/pgops.conf >/dev/null
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing Python requirements"
    # pip's own notices (an index location of the machine's pip config it skips) go to a log, shown on failure.
    if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
           .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; } \
           > .venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        exit 1
    fi
    echo "$wanted" > "$stamp"
fi

# The second example application keeps its own environment (psycopg 3, no psycopg2), as a real project does:
# the tests run its migrations with it (alembic_python), not with the modules' Python.
example_stamp=.venv-bookshelf/.requirements.sha256
example_wanted=$(sha256sum < examples/bookshelf/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$example_stamp" 2>/dev/null)" != "$example_wanted" ]; then
    echo "setup: creating .venv-bookshelf for the bookshelf example"
    [ -x .venv-bookshelf/bin/python ] || "$PYTHON" -m venv .venv-bookshelf
    if ! .venv-bookshelf/bin/python -m pip install --quiet --disable-pip-version-check \
           -r examples/bookshelf/requirements.txt > .venv-bookshelf/pip.log 2>&1; then
        cat .venv-bookshelf/pip.log >&2
        exit 1
    fi
    echo "$example_wanted" > "$example_stamp"
fi

# ansible-test sanity builds a virtualenv per test and fetches pip's bootstrap script for it from a
# host outside the package registries; give it ours, which takes pip from the package index.
pip_version=$(.venv/bin/python -c "import re, ansible_test._internal.python_requirements as r, inspect; print(re.search(r\"pip='([0-9.]+)'\", inspect.getsource(r)).group(1))")
bootstrap=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -f "$bootstrap" ]; then
    mkdir -p "$(dirname "$bootstrap")"
    cp tools/get_pip_offline.py "$bootstrap"
fi

# ansible.cfg's collections_path: intowork.pgops resolves to this checkout.
mkdir -p .collections/ansible_collections/intowork
ln -sfn ../../.. .collections/ansible_collections/intowork/pgops
.venv/bin/ansible-galaxy collection install -r requirements.yml >/dev/null
# sed reads all of its input: head would close the pipe early and ansible would print a BrokenPipeError.
echo "setup: ready ($(.venv/bin/ansible --version | sed -n 1p))"
