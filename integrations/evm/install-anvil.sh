#!/usr/bin/env bash
# Installs `anvil` (Foundry's local EVM node) from the npm registry into
# integrations/evm/node_modules, unless one is already on PATH or installed there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if command -v anvil >/dev/null || [ -x "$here/node_modules/.bin/anvil" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "install-anvil.sh: npm is missing: apt-get install npm" >&2; exit 2; }
npm install --prefix "$here" --no-audit --no-fund --loglevel=error @foundry-rs/anvil
