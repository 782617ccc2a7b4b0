#!/usr/bin/env sh
# The MLflow plugin against real `mlflow server` subprocesses on loopback, used by plain
# http:// clients. Each test module starts and stops its own servers on free ports.
#
#   integrations/mlflow_server/run.sh             # one server: flchain+sqlite://, 2 workers
#   integrations/mlflow_server/run.sh --postgres  # two servers (2 workers each) on one
#                                                 # PostgreSQL database sharing one ledger
#   integrations/mlflow_server/run.sh --all       # every MLflow test (store, tamper, units too)
#
# --postgres starts a throwaway PostgreSQL cluster (Debian's `postgresql` package; as the
# postgres user when run as root) unless FLCHAIN_TEST_POSTGRES=postgresql://... names a
# server you run.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
cd "$ROOT"
"$PY" -c "import mlflow, flchain_plugin" 2>/dev/null || {
    echo "run.sh: $PY cannot import mlflow and flchain_plugin; run \`make install\` or set PYTHON=" >&2
    exit 2
}
case "${1:-}" in
    --all)
        shift
        exec "$PY" -m pytest -q -m mlflow tests/test_mlflow_*.py "$@" ;;
    --postgres)
        shift
        "$PY" -c "import psycopg" 2>/dev/null || {
            echo "run.sh: $PY cannot import psycopg; run \`pip install 'flchain-plugin[postgres]'\`" >&2
            exit 2
        }
        exec "$PY" -m pytest -q -m mlflow tests/test_mlflow_postgres.py "$@" ;;
esac
exec "$PY" -m pytest -q -m mlflow tests/test_mlflow_server.py "$@"
