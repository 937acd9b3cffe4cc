#!/usr/bin/env bash
# Runs a command with a private moto server: installs moto into the project-local venv
# (.venv, see venv.sh) when missing, starts it on a free loopback port, exports the standard AWS
# variables pointing at it, runs the command, and always stops the server.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
"$root/infra/venv.sh"

state=$(mktemp -d)
"$venv/bin/python" "$root/infra/moto_server.py" "$state/port" >"$state/moto.log" 2>&1 &
moto_pid=$!
cleanup() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

for _ in $(seq 1 200); do
  [ -s "$state/port" ] && break
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "with-moto: moto failed to start:" >&2
    cat "$state/moto.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$state/port" ] || { echo "with-moto: moto did not report a port" >&2; exit 1; }
port=$(cat "$state/port")

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
echo "with-moto: moto on $AWS_ENDPOINT_URL" >&2
"$@"
