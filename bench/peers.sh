#!/usr/bin/env bash
# One command: bash bench/peers.sh [peers.py args, e.g. --rounds 7 --steps 200]
# Creates a bench-only virtualenv at bench/.venv-peers (never a project dependency) with
# the peer engines and this package installed editable, then runs bench/peers.py in it.
# Set PEERS_REINSTALL=1 to refresh the packages in an existing venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$here/.venv-peers"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ] || [ "${PEERS_REINSTALL:-0}" = 1 ]; then
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q dbos langgraph langgraph-checkpoint-sqlite -e "$repo"
fi
exec "$venv/bin/python" "$here/peers.py" "$@"
