#!/usr/bin/env bash
# The embedded stack with the demo: Temporal dev server + UI, SQLite, worker, webhook sink.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/billing dev --demo "$@"
