#!/usr/bin/env sh
# Hybrid Engine for Linux and macOS, in one command:
#   1. a virtual environment in your data folder (not in this checkout, so the browser
#      keeps working if the checkout moves),
#   2. the package from this checkout,
#   3. the native host registered for every browser found (or the ones you name),
#   4. how to load the extension.
# Usage: sh install/install.sh [--browser NAME ...] [--extension-id ID ...] [--system]
# Undo:  "<venv>/bin/hybrid-engine" uninstall && rm -rf "<venv>"
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${HYBRID_ENGINE_HOME:-}" ]; then
    data="$HYBRID_ENGINE_HOME"
elif [ "$(uname -s)" = "Darwin" ]; then
    data="$HOME/Library/Application Support/hybrid-engine"
else
    data="${XDG_DATA_HOME:-$HOME/.local/share}/hybrid-engine"
fi
venv="$data/venv"

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$(command -v "$candidate")
        break
    fi
done
if [ -z "$python" ]; then
    echo "install: Hybrid Engine needs Python 3.11 or newer; install it and run this again." >&2
    exit 2
fi

mkdir -p "$data"
chmod 700 "$data"
if [ ! -x "$venv/bin/python" ]; then
    echo "install: creating $venv" >&2
    "$python" -m venv "$venv"
fi
echo "install: installing the package from $here" >&2
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$here"

"$venv/bin/hybrid-engine" install "$@"

cat <<MSG

Hybrid Engine is installed in $venv.
Load the extension from $here/extension:
  Chrome, Chromium, Edge, Brave, Vivaldi: open chrome://extensions, turn on Developer mode,
      click "Load unpacked" and choose that folder.
  Firefox: open about:debugging#/runtime/this-firefox, click "Load Temporary Add-on"
      and choose extension/manifest.json.
Set a provider key:  "$venv/bin/hybrid-engine" keys set openai
Check the setup:     "$venv/bin/hybrid-engine" doctor
MSG
