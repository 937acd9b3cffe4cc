#!/usr/bin/env bash
# Ensures the project-local Python venv (.venv) with the pinned tools the tests use:
# moto (the AWS emulator) and cfn-lint (template validation). Idempotent and quick when
# everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
moto_version="5.2.5"
cfn_lint_version="1.58.0"

if ! "$venv/bin/python" - "$moto_version" "$cfn_lint_version" 2>/dev/null <<'PY'
import sys, importlib.metadata as m
assert m.version("moto") == sys.argv[1] and m.version("cfn-lint") == sys.argv[2]
import werkzeug  # moto server
PY
then
  echo "venv: installing moto[server]==$moto_version and cfn-lint==$cfn_lint_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "moto[server]==$moto_version" "cfn-lint==$cfn_lint_version"
fi
