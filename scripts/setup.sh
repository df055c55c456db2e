#!/usr/bin/env bash
# Builds everything into ./.venv: system packages that are missing (apt, as root),
# the Python dependencies, and the native core (release build, installed editable).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if command -v dpkg-query >/dev/null; then
    # Pango and a font: WeasyPrint renders PDF reports with them.
    need=(pkg-config libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)
    command -v cc >/dev/null || need+=(build-essential)
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need+=("python3-venv")
    # Callers that need more system packages (scripts/test.sh: the PostgreSQL server for
    # the throwaway test cluster) name them here, space separated.
    read -r -a extra <<< "${TOCSIN_APT_EXTRA:-}"
    need+=("${extra[@]}")
    apt_install "${need[@]}"
fi

command -v cargo >/dev/null || { echo "setup: a Rust toolchain (cargo) is required: https://rustup.rs" >&2; exit 1; }
if command -v rustup >/dev/null; then
    for component in clippy rustfmt; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
    done
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
echo "setup: Python packages"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "maturin>=1.9,<2"
# maturin develop installs the dependencies (with the dev extra) and the package in
# editable mode, with the native module built in release mode next to the sources.
# Cargo's progress stays on screen: the first build compiles ~200 crates.
if [ ! -d target/release ]; then
    echo "setup: building the native core in release mode; the first build takes several minutes"
else
    echo "setup: building the native core (only what changed)"
fi
VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/maturin" develop --release --extras dev
echo "setup: ready ($("$VENV/bin/tocsin" version))"
