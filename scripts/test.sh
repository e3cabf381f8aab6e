#!/usr/bin/env bash
# Run the whole test suite (installs first when .venv is missing or out of date).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  bash scripts/setup.sh --no-demo
  rm -f .venv/.installed-*; touch "$stamp"
fi
exec .venv/bin/python -m pytest -q "$@"
