#!/usr/bin/env bash
# Ensures the project-local Python venv (.venv) with the pinned tools the tests use:
# moto (the AWS emulator), cfn-lint (template validation) and schemathesis (the API fuzzed
# from its OpenAPI document, `make contract-test`). Idempotent and quick when
# everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
moto_version="5.2.5"
cfn_lint_version="1.58.0"
schemathesis_version="4.32.5"

if ! "$venv/bin/python" - "$moto_version" "$cfn_lint_version" "$schemathesis_version" 2>/dev/null <<'PY'
import sys, importlib.metadata as m
assert m.version("moto") == sys.argv[1] and m.version("cfn-lint") == sys.argv[2]
assert m.version("schemathesis") == sys.argv[3]
import werkzeug  # moto server
PY
then
  echo "venv: installing moto[server]==$moto_version, cfn-lint==$cfn_lint_version and schemathesis==$schemathesis_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "moto[server]==$moto_version" "cfn-lint==$cfn_lint_version" \
    "schemathesis==$schemathesis_version"
fi
