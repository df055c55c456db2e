#!/usr/bin/env bash
# Builds everything and starts the server on the embedded default (SQLite in ./data).
# Extra arguments go to `tocsin serve` (e.g. --port 9000 --host 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/tocsin serve --data-dir "${TOCSIN_DATA_DIR:-data}" "$@"
