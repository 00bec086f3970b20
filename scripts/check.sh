#!/usr/bin/env bash
# The project's checks, exactly as CI runs them: lint with the project's ruff configuration, then
# the whole test suite (browser, load and Ray loopback tests included). Needs
# `bash scripts/setup.sh --browser --scale` once.
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False
export MPLCONFIGDIR="${MPLCONFIGDIR:-${TMPDIR:-/tmp}/xray-mpl}"
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
