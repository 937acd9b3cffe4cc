#!/usr/bin/env bash
# Ensures the project-local Python venv (.venv) with the pinned tools the tests use:
# moto (the AWS emulator), cfn-lint (template validation) and schemathesis (the API fuzzed
# from its OpenAPI document, `make contract-test`). Idempotent and quick when
# everything is already there.
#
# Optional groups, only for the targets that need them (make test stays as small as it was):
#   infra/venv.sh sam       also aws-sam-cli (`sam validate --lint` in make lint)
#   infra/venv.sh package   also aws-sam-cli, cargo-lambda and ziglang (make package: zig is
#                           the cross-linker for arm64, so no Docker and no aarch64 gcc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
moto_version="5.2.5"
cfn_lint_version="1.58.0"
schemathesis_version="4.32.5"
sam_version="1.170.0"
cargo_lambda_version="1.9.2"
ziglang_version="0.15.2"

reqs=("moto==$moto_version" "cfn-lint==$cfn_lint_version" "schemathesis==$schemathesis_version")
for group in "$@"; do
  case "$group" in
    sam) reqs+=("aws-sam-cli==$sam_version") ;;
    package) reqs+=("aws-sam-cli==$sam_version" "cargo-lambda==$cargo_lambda_version" "ziglang==$ziglang_version") ;;
    *) echo "venv.sh: unknown group '$group' (known: sam, package)" >&2; exit 2 ;;
  esac
done

if ! "$venv/bin/python" - "${reqs[@]}" 2>/dev/null <<'PY'
import sys, importlib.metadata as m
for req in sys.argv[1:]:
    name, version = req.split("==")
    assert m.version(name) == version
import werkzeug  # moto server
PY
then
  echo "venv: installing ${reqs[*]} into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # All pins in one resolve, so an optional group cannot move a dependency moto relies on.
  pins=("moto[server]==$moto_version" "${reqs[@]:1}")
  "$venv/bin/pip" install --quiet "${pins[@]}"
fi
