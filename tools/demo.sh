#!/usr/bin/env bash
# The demo: a fresh sandbox PostgreSQL, INTOWORK at its baseline revision with the reference data,
# then deploy_migration.yml twice (the second run must change nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
SCALE=${SCALE:-1}
started=$(date +%s)

step() { printf '\n== %s\n' "$*"; }

step "Sandbox PostgreSQL ${PG_VERSION:-15}"
python tools/sandbox.py down --name demo >/dev/null
python tools/sandbox.py up --name demo --version "${PG_VERSION:-15}"
eval "$(python tools/sandbox.py env --name demo)"

step "INTOWORK schema at the baseline revision"
(cd examples/intowork && alembic upgrade a7f3b2c1d9e8 2>&1 | grep -v "^INFO  \[alembic.runtime.migration\] Will assume")

step "Reference data (scale $SCALE)"
python examples/intowork/generate_data.py --scale "$SCALE"

step "ansible-playbook playbooks/deploy_migration.yml"
ansible-playbook playbooks/deploy_migration.yml | tail -n 14

step "Second run: nothing pending, so nothing may change"
ansible-playbook playbooks/deploy_migration.yml | tee /tmp/pgops-demo-second.log | tail -n 3
grep -Eq "changed=0 +unreachable=0 +failed=0" /tmp/pgops-demo-second.log

step "Done in $(( $(date +%s) - started )) s"
echo "The sandbox is still running: eval \"\$(python tools/sandbox.py env --name demo)\" && psql"
echo "Remove it with: make demo-down"
