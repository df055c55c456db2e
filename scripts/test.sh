#!/usr/bin/env bash
# Builds everything and runs every check: lint (Rust and Python), the Rust tests and the
# Python tests. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# The PostgreSQL server binaries: the store tests start a private cluster from them
# (tests/pgcluster.py); no running system service is needed. iproute2 (`ip`): the agents
# test puts one agent in a network namespace of its own. chromium: the status pages are
# opened in a real browser (driven by Playwright); prometheus: it scrapes the metrics.
# poppler-utils (`pdftotext`): the text of the PDF reports. mariadb-server and
# redis-server: the database checks probe real servers (started by the tests).
TOCSIN_APT_EXTRA="postgresql iproute2 chromium prometheus prometheus-alertmanager poppler-utils mariadb-server redis-server ${TOCSIN_APT_EXTRA:-}" ./scripts/setup.sh
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

step() { echo; echo "== $*"; }

step "cargo fmt --check";   cargo fmt --check
step "cargo clippy";        cargo clippy --all-targets --all-features --quiet -- -D warnings
step "ruff check";          ruff check python tests bench examples
step "ruff format --check"; ruff format --check python tests bench examples
step "mypy";                mypy
step "import-linter";       lint-imports
step "cargo test";          cargo test --quiet
step "pytest";              python -m pytest -q -p no:cacheprovider "$@"
