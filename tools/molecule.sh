#!/usr/bin/env bash
# Every Molecule scenario, as many at a time as the machine has cores: each is one Ansible process (one core),
# and each has its own sandbox server and its own files (its ephemeral folder), so they do not meet.
# Each scenario's output goes to build/molecule/<scenario>.log; a failure prints the end of its log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
logs=build/molecule
mkdir -p "$logs"
lanes=${PGOPS_MOLECULE_LANES:-$(nproc)}

run_one() {
    local scenario=$1 log="$logs/$1.log" started=$SECONDS
    if molecule test -s "$scenario" >"$log" 2>&1; then
        printf 'molecule %-18s passed in %4d s\n' "$scenario" $((SECONDS - started))
    else
        printf 'molecule %-18s FAILED after %d s; the end of %s:\n' "$scenario" $((SECONDS - started)) "$log"
        tail -n 60 "$log"
        return 1
    fi
}
export -f run_one
export logs

# The longest first (the deployments), so the last lane does not start a long one alone.
scenarios=(remote safe_deploy default bookshelf backup verification monitoring maintenance_jobs pool_config)
for dir in molecule/*/molecule.yml; do
    name=$(basename "$(dirname "$dir")")
    [[ " ${scenarios[*]} " == *" $name "* ]] || scenarios+=("$name")
done
for name in "${scenarios[@]}"; do
    [[ -f molecule/$name/molecule.yml ]] || { echo "molecule: no scenario $name" >&2; exit 1; }
done

started=$SECONDS
# shellcheck disable=SC2016  # "$1" is the inner shell's: the scenario xargs hands it
if printf '%s\n' "${scenarios[@]}" | xargs -P "$lanes" -I{} bash -c 'run_one "$1"' _ {}; then
    echo "molecule: ${#scenarios[@]} scenarios passed in $((SECONDS - started)) s ($lanes at a time)"
else
    echo "molecule: a scenario failed (logs in $logs)" >&2
    exit 1
fi
