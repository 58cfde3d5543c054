#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian/Ubuntu machine: the browsers for the
# end-to-end tests (Debian's Chromium and Firefox ESR; never a downloaded browser build),
# web-ext for linting the Firefox build, and the package with its test extras in .venv.
# Idempotent: what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || need_apt+=(firefox-esr)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "dev-setup: installing ${need_apt[*]} with apt-get" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# web-ext lints the Firefox build and is what tests/e2e finds at node_modules/.bin/web-ext.
if [ ! -x node_modules/.bin/web-ext ]; then
    npm install --no-save --no-package-lock --no-audit --no-fund --silent web-ext@10 >/dev/null
fi
echo "dev-setup: ready" >&2
