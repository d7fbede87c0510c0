#!/usr/bin/env bash
# The whole test suite: SQLite and PostgreSQL (BILLING_TEST_POSTGRES_URL), lint and types.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
