#!/usr/bin/env bash
# Lint and types, run by the test command (tests/run.sh) before the tests:
# - ruff (pyflakes, pycodestyle, import order; settings in pyproject.toml) over the checkout;
# - mypy over the detectors and the wire schema (losswatch.detectors), checked as installed from a
#   built, non-editable wheel in a temporary venv: the editable install maps client/, detectors/...
#   onto losswatch.* with an import hook that static tools do not follow.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/ruff check --quiet .

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# (setuptools warns about the data folders shipped as package data: shown only if the build fails)
.venv/bin/pip wheel -q --no-deps --no-build-isolation --wheel-dir "$tmp/dist" . >"$tmp/wheel.log" 2>&1 \
  || { cat "$tmp/wheel.log"; exit 1; }
.venv/bin/python -m venv "$tmp/venv"
# numpy for its type stubs; the same version as the test venv's, from pip's cache when it has it
"$tmp/venv/bin/pip" install -q --disable-pip-version-check "numpy==$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')" "$tmp"/dist/*.whl
# (a cache of its own: the shared .mypy_cache kept stale views of packages the wheel gained)
.venv/bin/mypy --python-executable "$tmp/venv/bin/python" --config-file pyproject.toml --cache-dir "$tmp/mypy-cache" -p losswatch.detectors
