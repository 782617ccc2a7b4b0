#!/usr/bin/env sh
# The MLflow plugin against a real `mlflow server` subprocess on loopback: sqlite backend
# behind `flchain+sqlite://`, a local --artifacts-destination, two uvicorn workers, plain
# http:// clients. Each test module starts and stops its own server on a free port.
#
#   integrations/mlflow_server/run.sh            # the server suite
#   integrations/mlflow_server/run.sh --all      # every MLflow test (store, tamper, units too)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
cd "$ROOT"
"$PY" -c "import mlflow, flchain_plugin" 2>/dev/null || {
    echo "run.sh: $PY cannot import mlflow and flchain_plugin; run \`make install\` or set PYTHON=" >&2
    exit 2
}
if [ "${1:-}" = "--all" ]; then
    shift
    exec "$PY" -m pytest -q -m mlflow tests/test_mlflow_*.py "$@"
fi
exec "$PY" -m pytest -q -m mlflow tests/test_mlflow_server.py "$@"
