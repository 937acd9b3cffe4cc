#!/usr/bin/env bash
# make run-aws-local: the closeflow stack on DynamoDB + Streams, SQS FIFO and EventBridge,
# emulated. Uses the emulator at AWS_ENDPOINT_URL when it is set (e.g. LocalStack:
# `set -a; . infra/localstack.env; set +a`); otherwise starts a private moto server
# (with-moto.sh) that stops when the stack does (Ctrl-C). CLOSEFLOW_AWS_LOCAL_BIN runs an
# already built binary instead of `cargo run` (the tests do).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# template.yaml and the .closeflow/ env file are found relative to the project root.
cd "$root"
if [ -n "${CLOSEFLOW_AWS_LOCAL_BIN:-}" ]; then
  cmd=("$CLOSEFLOW_AWS_LOCAL_BIN")
else
  cmd=(cargo run -q -p closeflow-embedded --bin closeflow-aws-local)
fi
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  echo "run-aws-local: using the emulator at $AWS_ENDPOINT_URL" >&2
  exec "${cmd[@]}"
fi
exec "$root/infra/with-moto.sh" "${cmd[@]}"
