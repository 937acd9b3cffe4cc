#!/usr/bin/env bash
# `make contract-test`: schemathesis fuzzes the real embedded binary from its own OpenAPI
# document (fetched from the running server: the document is its only input). Every
# response must be listed in the document with a valid body, and never a 5xx; stateful
# links walk register -> close -> poll. Bounded by CONTRACT_TEST_SECONDS (default 120).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/infra/venv.sh"
seconds=${CONTRACT_TEST_SECONDS:-120}

cargo build -q -p closeflow-embedded --bin closeflow
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="contract-test-token-$RANDOM$RANDOM"
secret="contract-test-secret-$RANDOM$RANDOM"
log=$(mktemp)

# An in-memory store, one token for every account, no rate limit (it would answer 429 to
# the fuzzer's bursts; the limiter has its own tests).
CLOSEFLOW_DB=:memory: API_TOKENS="$token=*" WEBHOOK_SECRET="$secret" RATE_LIMIT_PER_SECOND=0 \
  PORT="$port" RUST_LOG="${RUST_LOG:-warn}" "$target/debug/closeflow" >"$log" 2>&1 &
server=$!
stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/openapi.json', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "contract-test: the server did not start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

# One worker: hypothesis parsing lambdas from two threads trips a CPython 3.11 AST bug.
# Checks: all, except
# - positive_data_acceptance: a schema-valid request may still be refused for the state it
#   meets (a fresh position id is 404 on GET, a second close is 409); those answers are
#   documented, and checked by status_code_conformance and response_schema_conformance.
out=$(mktemp)
run() {
  set +o pipefail
  PYTHONPATH="$root/infra" SCHEMATHESIS_HOOKS=schemathesis_hooks WEBHOOK_SECRET="$secret" \
    timeout --kill-after=10 $((seconds + 60)) \
    "$root/.venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-time "$seconds" \
    --workers 1 \
    --seed "$1" \
    --warnings off \
    "${@:2}" 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  set -o pipefail
}
seed=${CONTRACT_TEST_SEED:-17}
run "$seed" "$@"
# Hypothesis' state machine can reach a state where no link rule applies ("No progress can
# be made from state ..."): a dead end of the test generator after the scenarios it ran
# passed, not an answer of the API. When that runtime error is the only error and no check
# failed, the run counts as passed (said so below); anything else fails.
dead_end_only() {
  local errors
  errors=$(sed -n '/^Errors:/,/^$/p' "$out")
  grep -q "No progress can be made from state" "$out" && ! grep -q "= FAILURES =" "$out" &&
    [ "$(grep -c '🚫' <<<"$errors")" -eq 1 ] && grep -q 'Runtime Error: 1' <<<"$errors"
}
if [ "$status" -ne 0 ] && dead_end_only; then
  echo "contract-test: the stateful generator reached a dead end after its scenarios passed (no API failure)" >&2
  status=0
fi

if [ "$status" -eq 0 ]; then
  # The summary as a plain closing line ("Test cases: N generated, N passed, ...").
  passed=$(sed -n 's/.*generated, \([0-9]*\) passed.*/\1/p' "$out" | tail -n 1)
  echo "contract-test: ${passed:-0} passed, 0 failed"
else
  echo "contract-test: schemathesis found failures (reproducing requests above); the server's log:" >&2
  tail -n 50 "$log" >&2
fi
rm -f "$log" "$out"
exit "$status"
