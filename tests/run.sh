#!/usr/bin/env bash
# Install everything the tests need (venv with pinned requirements, Debian's chromium for the browser test) and run
# the whole suite. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV_DIR:-venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -r requirements-test.txt
# BPE vocabulary only (its dependency torchvision would replace the CPU torch): never install it with deps.
"$VENV/bin/python" -m pip install --quiet --no-deps open-clip-torch==3.3.0
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'wrong torch ' + torch.__version__)"
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed; browser tests will be skipped"
    else
        echo "chromium is not installed (needs root for apt-get); browser tests will be skipped"
    fi
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
