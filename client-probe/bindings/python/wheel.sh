#!/usr/bin/env bash
# Builds the platform wheel (dist/synchealth_probe-*.whl) from what build.sh
# generated: run `PROFILE=release ./build.sh` first for a release library.
# PYTHON names the interpreter whose pip builds it (it needs setuptools and
# wheel at the versions pyproject.toml pins; scripts/install-deps puts them
# in target/py-venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
cd "$here"
[ -f synchealth_probe/_generated.py ] || { echo "run ./build.sh first" >&2; exit 1; }
rm -rf build dist ./*.egg-info
"$python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w dist .
rm -rf build ./*.egg-info
ls dist/*.whl
