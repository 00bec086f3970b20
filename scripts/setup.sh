#!/usr/bin/env bash
# Create .venv and install the app (and, with --dev, the test tools; with --browser, Chromium
# for the browser tests; with --scale, Ray Serve for the model tier, see README "Scaling out").
# Idempotent: a second run with unchanged requirements returns at once.
# torch is installed first and pinned by constraints.txt so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0; browser=0; scale=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --browser) browser=1; dev=1 ;;
    --scale) scale=1 ;;
    *) echo "usage: $0 [--dev] [--browser] [--scale]" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
VENV=${XRAY_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

files=(constraints.txt requirements.txt)
[ "$dev" = 1 ] && files+=(requirements-dev.txt)
[ "$scale" = 1 ] && files+=(requirements-scale.txt)
stamp="$VENV/.xray-installed-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # XRAY_TORCH_INDEX_URL picks a torch build (e.g. a CPU-only index for small Docker images).
  "${pip[@]}" install -q "torch==2.13.0" ${XRAY_TORCH_INDEX_URL:+--index-url "$XRAY_TORCH_INDEX_URL"}
  reqs=(-r requirements.txt)
  [ "$dev" = 1 ] && reqs+=(-r requirements-dev.txt)
  [ "$scale" = 1 ] && reqs+=(-r requirements-scale.txt)
  "${pip[@]}" install -q -c constraints.txt "${reqs[@]}"
  "${pip[@]}" check
  touch "$stamp"
fi

if [ "$browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # Debian's Chromium for the Playwright tests (never `playwright install`: it downloads a browser).
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
  fi
fi
