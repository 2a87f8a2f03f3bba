#!/usr/bin/env bash
# The README's test command (`make test`) runs this: lint, type-check, start the local stack, run every test.
# The stack is stopped again at the end when this script was the one that started it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "== lint (ruff), types (mypy) and layer contracts (import-linter)"
$PY -m ruff check .
$PY -m ruff format --check .
$PY -m mypy
.venv/bin/lint-imports --no-cache --no-logo

echo "== deployment tools (helm, actionlint, checkov: built once per machine, linked into .aether/bin)"
bash ops/tools.sh

started_here=0
if ! $PY -m ops.stack_cli status >/dev/null 2>&1; then
  started_here=1
fi
stop_stack() {
  if [ "$started_here" = 1 ] && [ "${AETHER_KEEP_STACK:-0}" != 1 ]; then
    $PY -m ops.stack_cli down || true
  fi
}
trap stop_stack EXIT

echo "== local stack (PostgreSQL, Redis, Apache Kafka)"
$PY -m ops.stack_cli up
eval "$($PY -m ops.stack_cli env)"
$PY -m ops.stack_cli browser

echo "== tests"
$PY -m pytest --durations=40 "$@"
