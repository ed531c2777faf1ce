#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection under build/ansible_collections/intowork/pgops,
# the layout ansible-test requires. Only files git tracks or would track are copied.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=build/ansible_collections/intowork/pgops
# Only the copy: build/ also holds the demo's sandbox and Molecule's logs.
rm -rf build/ansible_collections
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$dest"
cd "$dest"
# The copy sits inside this checkout's ignored build/ folder: a repository of its own lets
# ansible-test list its files.
git init --quiet && git add --all
ansible-test sanity --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@"
