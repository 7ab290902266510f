#!/usr/bin/env bash
# Set up a virtual environment with the pinned requirements and start the web UI. Flags are passed to app.py.
#   ./webui.sh               UI at http://127.0.0.1:7860 with the embedded default model
#   ./webui.sh --api         also the A1111-compatible API under /sdapi/v1
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV_DIR:-venv}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the requirements changed since the last successful install.
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing requirements (torch stays at the pinned CPU build 2.13.0)"
    "$VENV/bin/python" -m pip install --quiet -r requirements.txt
    "$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
    "$VENV/bin/python" -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} was installed instead of 2.13.0')"
    echo "$want" > "$stamp"
fi
exec "$VENV/bin/python" app.py "$@"
