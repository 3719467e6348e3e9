#!/usr/bin/env bash
# Idempotent setup: the Debian data package (when apt is available), a virtual environment at
# .venv/ with the pinned packages of requirements.txt, and kdlab itself (editable).
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
export DVC_NO_ANALYTICS=1

# 1. Real Fashion-MNIST from Debian/Ubuntu's package (no internet needed for the data).
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "[setup] installing Debian package dataset-fashion-mnist"
  if ! { $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }; }; then
    echo "[setup] could not install dataset-fashion-mnist; the download stage will use the official mirror"
  fi
fi

# 2. Virtual environment with pinned packages (skipped when already satisfied).
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.kdlab-requirements
if [ ! -f "$STAMP" ] || ! cmp -s requirements.txt "$STAMP"; then
  echo "[setup] installing pinned packages (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$STAMP"
fi
if ! .venv/bin/python -c "import kdlab" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "[setup] ready: $(python --version), torch $(python -c 'import torch; print(torch.__version__)'), $(dvc --version | head -1 | sed 's/^/dvc /')"
