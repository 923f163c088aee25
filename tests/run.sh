#!/usr/bin/env bash
# The test command (README.md, "Set-up"): installs everything the tests need, then runs them.
# - Debian's redis-server and prometheus (promtool) when missing: tests start their own on loopback;
#   chromium (headless) for the page tests.
# - a venv in .venv with torch 2.13.0 CPU (pinned: an unpinned torch pulls a multi-GB CUDA build)
#   and losswatch[dev];
# - lint and types first (tests/lint.sh: ruff over the checkout, mypy over the detectors).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[dev]'

bash tests/lint.sh
exec .venv/bin/python -m pytest "$@"
