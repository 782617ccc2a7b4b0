#!/usr/bin/env sh
# Anchoring and minting against a real EVM node: anvil (Foundry), installed from the npm
# registry by install-anvil.sh beside this script, started by tests/test_anvil.py on
# 127.0.0.1 on a free port (chain id 31337), then the same scenario as the in-process
# suite and the operator's `flchain anchor` commands over JSON-RPC.
#
#   integrations/evm/run.sh          # the anvil suite
#   integrations/evm/run.sh --all    # and the in-process EVM suite (tests/test_anchor.py)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
cd "$ROOT"
"$PY" -c "import web3, flchain_plugin" 2>/dev/null || {
    echo "run.sh: $PY cannot import web3 and flchain_plugin; pip install '.[evm,test]' or set PYTHON=" >&2
    exit 2
}
bash "$HERE/install-anvil.sh"
if [ "${1:-}" = "--all" ]; then
    shift
    exec "$PY" -m pytest -q tests/test_anvil.py tests/test_anchor.py "$@"
fi
exec "$PY" -m pytest -q tests/test_anvil.py "$@"
