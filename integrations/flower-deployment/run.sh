#!/usr/bin/env sh
# The plugin on Flower's deployment engine: a real `flower-superlink` and four
# `flower-supernode` processes on loopback, TLS (a CA and a server certificate made for the
# run), SuperNode authentication (ssh-keygen ECDSA P-384 keys registered with
# `flwr supernode register`), examples/flower-app started with `flwr run`, one SuperNode
# killed with SIGKILL mid-round, one with an unregistered key turned away.
#
#   integrations/flower-deployment/run.sh          # the deployment suite (2-4 minutes)
#   integrations/flower-deployment/run.sh --all    # with the app's simulation tests too
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
cd "$ROOT"
"$PY" -c "import flwr, flchain_plugin" 2>/dev/null || {
    echo "run.sh: $PY cannot import flwr and flchain_plugin; run \`make install\` or set PYTHON=" >&2
    exit 2
}
command -v ssh-keygen >/dev/null || {
    echo "run.sh: ssh-keygen not found: apt-get install openssh-client" >&2
    exit 2
}
if [ "${1:-}" = "--all" ]; then
    shift
    exec "$PY" -m pytest -q tests/test_flower_deployment.py tests/test_flower_app.py "$@"
fi
exec "$PY" -m pytest -q tests/test_flower_deployment.py "$@"
