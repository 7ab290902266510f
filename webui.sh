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
# "Restart the app" (Extensions tab) and /sdapi/v1/server-restart end the app with code 75 (modules/restart.py);
# it is then started again, with the same flags. Any other exit ends this script with that code. Ctrl+C / SIGTERM
# given to this script are passed on to the app.
export SD_WEBUI_RESTART=1
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null' INT TERM
while true; do
    "$VENV/bin/python" app.py "$@" <&0 &
    pid=$!
    code=0
    wait "$pid" || code=$?
    while kill -0 "$pid" 2>/dev/null; do        # a trapped signal ended the wait: wait for the app's own exit
        code=0
        wait "$pid" || code=$?
    done
    [ "$code" -eq 75 ] || exit "$code"
    echo "Restarting the web UI"
done
