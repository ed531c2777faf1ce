#!/usr/bin/env bash
# The demo: a fresh sandbox PostgreSQL, INTOWORK at its baseline revision with the reference data and an
# application role writing to it; deploy_migration.yml in maintenance mode, rollback.yml back to the baseline,
# deploy_migration.yml in online mode, then once more (nothing pending: nothing may change). The summary gives
# what the application's writes met in each mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
SCALE=${SCALE:-1}
# One sandbox per checkout: two clones on a shared machine never stop each other's.
NAME=${PGOPS_DEMO_NAME:-demo-$(printf '%s' "$PWD" | sha256sum | cut -c1-10)}
if [ "${1:-}" = name ]; then
  echo "$NAME"
  exit
fi
if [ "${1:-}" = down ]; then
  python tools/sandbox.py down --name "$NAME"
  exit
fi
WORK=${PGOPS_DEMO_DIR:-$PWD/build/demo}
BASELINE=a7f3b2c1d9e8
APP_ROLE=intowork_app
started=$(date +%s)

step() { printf '\n== %s\n' "$*"; }

step "Sandbox PostgreSQL ${PG_VERSION:-15}"
python tools/sandbox.py down --name "$NAME" >/dev/null
python tools/sandbox.py up --name "$NAME" --version "${PG_VERSION:-15}"
eval "$(python tools/sandbox.py env --name "$NAME")"
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 0700 "$WORK"

step "INTOWORK schema at the baseline revision"
# grep exits 1 when it filtered every line (all were INFO): only that is not a failure.
(cd examples/intowork && alembic upgrade "$BASELINE" 2>&1 | { grep -v "^INFO  \[alembic" || [ $? -eq 1 ]; })
echo "at revision $BASELINE"

step "Reference data (scale $SCALE)"
python examples/intowork/generate_data.py --scale "$SCALE"

step "The application's role ($APP_ROLE), which the write guard turns off in maintenance mode"
app_password=$(python -c 'import secrets; print(secrets.token_hex(16))')
# On stdin and in a 0600 file, never on a command line.
"$PGOPS_SANDBOX_BINDIR/psql" -q -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE $APP_ROLE LOGIN PASSWORD '$app_password';
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO $APP_ROLE;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO $APP_ROLE;
SQL
(umask 077 && cat > "$WORK/vars.yml" <<VARS
pgops_app_roles: [$APP_ROLE]
pgops_app_probe_user: $APP_ROLE
pgops_app_probe_password: "$app_password"
pgops_backup_dir: $WORK/backups
pgops_reports_dir: $WORK/reports
VARS
)

# What a runbook said it did: its last task's message and the recap, not the job artifacts (JSON) printed after.
said() {
  awk -v task="TASK [$1]" 'index($0, task) == 1 { shown = 1 }
    /^PLAY RECAP/ { if (shown) { getline; print; exit } }
    shown' "$2"
}

# Runs the playbook with the application writing 20 times a second, from 2 s before to 2 s after it.
with_writes() {
  local label=$1; shift
  PGUSER=$APP_ROLE PGPASSWORD=$app_password python examples/intowork/write_load.py --out "$WORK/$label.writes.json" &
  local writer=$!
  sleep 2
  ansible-playbook "$@" -e "@$WORK/vars.yml" > "$WORK/$label.log" || { tail -n 20 "$WORK/$label.log"; kill "$writer"; exit 1; }
  sleep 2
  kill "$writer" && wait "$writer"
  said "intowork.pgops.deploy : Print what happened" "$WORK/$label.log"
}

step "Maintenance mode: ansible-playbook playbooks/deploy_migration.yml (writes off while it migrates)"
with_writes maintenance playbooks/deploy_migration.yml

step "Back to the baseline: ansible-playbook playbooks/rollback.yml -e revision=$BASELINE"
ansible-playbook playbooks/rollback.yml -e "revision=$BASELINE" -e confirm=yes -e "@$WORK/vars.yml" > "$WORK/rollback.log"
said "Say where the database is now" "$WORK/rollback.log"

step "Online mode: ansible-playbook playbooks/deploy_migration.yml -e pgops_deploy_mode=online (writes stay on)"
with_writes online playbooks/deploy_migration.yml -e pgops_deploy_mode=online

step "Second run: nothing pending, so nothing may change"
ansible-playbook playbooks/deploy_migration.yml -e "@$WORK/vars.yml" > "$WORK/second.log"
said "intowork.pgops.deploy : Print what happened" "$WORK/second.log"
grep -Eq "changed=0 +unreachable=0 +failed=0" "$WORK/second.log"

step "What the application's writes met"
for mode in maintenance online; do
  python - "$mode" "$WORK/$mode.writes.json" "$WORK/$mode.log" <<'PY'
import json, re, sys
mode, writes, log = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read()
reported = re.search(r"writes off: ([0-9.]+) s", log)
print(f"{mode:12} {writes['failed']} of {writes['writes']} writes failed; they failed for "
      f"{writes['failed_window_seconds']} s (the runbook: writes off {reported.group(1) if reported else '?'} s)")
PY
done

step "What the runbooks kept"
python - "$WORK" <<'PY'
import glob, json, os, sys
work = sys.argv[1]
records = sorted(glob.glob(os.path.join(work, "reports", "deploy-*.json")), key=os.path.getmtime)
backup = json.load(open(records[0]))["backup"]
print(f"the backup before the first deployment: {backup['path']} ({backup['size_bytes']} bytes, "
      f"verified: {str(backup['verified']).lower()})")
print(f"{len(records)} deployment records (JSON, and Markdown beside each) in {os.path.join(work, 'reports')}")
PY

step "Done in $(( $(date +%s) - started )) s"
echo "The sandbox is still running: eval \"\$(python tools/sandbox.py env --name $NAME)\" && psql"
echo "Remove it with: make demo-down"
