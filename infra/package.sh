#!/usr/bin/env bash
# make package: builds every function in template.yaml for provided.al2023/arm64 with
# `sam build` itself (SAM's rust-cargolambda build method: `cargo lambda build --release
# --arm64 --bin <Binary>` per function, copied to .aws-sam/build/<LogicalId>/bootstrap), so
# a build failure shows up here, not at a deployer's first `sam build`. No Docker:
# cargo-lambda cross-links with zig, both from the project venv (PyPI). Then zips every
# artifact exactly as `sam deploy` uploads it and prints its path and zipped size.
#
# Outputs: .aws-sam/build/ (what `sam deploy` deploys: template.yaml + one bootstrap per
# function) and .aws-sam/zips/<binary>.zip (the upload, for sizes; the bench reads these).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=aarch64-unknown-linux-gnu
build_dir=.aws-sam/build
zip_dir=.aws-sam/zips
# Lambda's limit is 50 MB zipped for direct upload; the project's own target is 10 MB.
max_zip_bytes=10000000
# provided.al2023 ships glibc 2.34: a binary needing newer symbols fails at its cold start.
runtime_glibc=2.34

die() { echo "package: error: $*" >&2; exit 1; }

infra/venv.sh package
# sam, cargo-lambda, and `python3 -m ziglang` (how cargo-lambda finds zig) from the venv.
export PATH="$root/.venv/bin:$PATH"
# A build needs no AWS account or region; telemetry off keeps SAM from calling out.
export SAM_CLI_TELEMETRY=0

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
# zig links for arm64, but rustc still needs the standard library built for the target.
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$target/lib" ]; then
  command -v rustup >/dev/null ||
    die "the Rust standard library for $target is missing from $sysroot and there is no rustup to add it"
  echo "package: adding the Rust standard library for $target (rustup target add)" >&2
  rustup target add "$target" ||
    die "rustup could not add $target (it downloads rust-std from the Rust distribution server). Without it no arm64 function can be built; install it where that server is reachable: rustup target add $target"
fi

# (LogicalId, Binary) of every function SAM builds with cargo-lambda, from the template. Any
# other code the template would run (another build method, an image, a container service or
# an instance) is refused: this script would not build it, so it must not report success.
fns_file=$(mktemp)
trap 'rm -f "$fns_file"' EXIT
python3 - >"$fns_file" <<'PY' || die "template.yaml deploys code that make package does not build (above)"
import sys
from samcli.yamlhelper import yaml_parse
t = yaml_parse(open("template.yaml").read())
unbuilt = []
# The one container the template may run is the trade-stream service, from the image the
# TradeStreamImage parameter names: its binary is built and staged here (see below).
service = [{"Ref": "TradeStreamImage"}]
for lid, r in t["Resources"].items():
    kind, m = r["Type"], r.get("Metadata") or {}
    if kind == "AWS::Serverless::Function" and m.get("BuildMethod") == "rust-cargolambda":
        print(lid, m["BuildProperties"]["Binary"])
    elif kind == "AWS::ECS::TaskDefinition" and [
        c.get("Image") for c in r["Properties"]["ContainerDefinitions"]
    ] == service:
        continue
    elif kind in ("AWS::Serverless::Function", "AWS::Lambda::Function", "AWS::Serverless::LayerVersion",
                  "AWS::Lambda::LayerVersion", "AWS::EC2::Instance", "AWS::AutoScaling::AutoScalingGroup",
                  "AWS::Batch::JobDefinition", "AWS::ECS::TaskDefinition") or kind.startswith("AWS::AppRunner::"):
        unbuilt.append(f"{lid} ({kind})")
for u in unbuilt:
    print(f"package: error: {u}: code the template runs that make package does not build", file=sys.stderr)
sys.exit(1 if unbuilt else 0)
PY
mapfile -t fns <"$fns_file"
[ "${#fns[@]}" -gt 0 ] || die "template.yaml has no rust-cargolambda function"
bins=()
for f in "${fns[@]}"; do bins+=(--bin "${f#* }"); done

# No zips from an earlier run may outlive a failed build (the bench reads them).
rm -rf "$zip_dir"
start=$(date +%s)
# One cargo run for all functions first: shared dependencies compile once and the LTO links
# run in parallel. Same command, flags and workspace as SAM's per-function runs below, so
# those find every binary fresh; they still run, so what is deployed is what sam builds.
echo "package: cargo lambda build --release --arm64 ${bins[*]} --bin trade-stream" >&2
cargo lambda build --release --arm64 "${bins[@]}" --bin trade-stream
echo "package: sam build (rust-cargolambda, no container)" >&2
sam build --template-file template.yaml --build-dir "$build_dir"
secs=$(( $(date +%s) - start ))

# e_machine 0xB7 (AArch64), byte 18 of the ELF header: an x86_64 binary here would deploy
# and fail only at its first invocation; a newer glibc than Amazon Linux 2023's fails at start.
check_arm64() {
  [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$1 is not an ELF binary"
  [ "$(od -An -tx1 -j18 -N2 "$1" | tr -d ' ')" = "b700" ] || die "$1 is not an arm64 (aarch64) binary"
  if command -v readelf >/dev/null; then
    need=$(readelf -V --wide "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    [ "$(printf '%s\n' "$need" "$runtime_glibc" | sort -V | tail -1)" = "$runtime_glibc" ] ||
      die "$1 needs glibc $need; Amazon Linux 2023 has $runtime_glibc"
  fi
}

mkdir -p "$zip_dir"
status=0
printf '\n%-24s %-48s %11s %11s\n' function artifact bootstrap zipped
for f in "${fns[@]}"; do
  lid=${f% *} bin=${f#* }
  art="$build_dir/$lid/bootstrap"
  [ -f "$art" ] || die "$lid: sam build produced no $art"
  check_arm64 "$art"
  # samcli's own zip routine: the same archive (deflate, 0755) that sam deploy uploads.
  python3 -c 'import sys; from samcli.lib.package.utils import make_zip; make_zip(sys.argv[1], sys.argv[2])' \
    "$zip_dir/$bin" "$build_dir/$lid"
  raw=$(stat -c %s "$art") zipped=$(stat -c %s "$zip_dir/$bin.zip")
  awk -v l="$lid" -v a="$art" -v r="$raw" -v z="$zipped" \
    'BEGIN { printf "%-24s %-48s %8.1f MB %8.1f MB\n", l, a, r / 1e6, z / 1e6 }'
  if [ "$zipped" -ge "$max_zip_bytes" ]; then
    echo "package: $lid: zipped artifact $zipped B is not under the target of $max_zip_bytes B" >&2
    status=1
  fi
done

# Optional, where Debian's qemu-user and libc6-arm64-cross are installed: start each arm64
# bootstrap under emulation against a stand-in Runtime API (it must ask for its first event).
if command -v qemu-aarch64 >/dev/null && [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  echo
  for f in "${fns[@]}"; do
    python3 infra/arm64_ready.py template.yaml "${f% *}" "$build_dir/${f% *}/bootstrap" || status=1
  done
else
  echo
  echo "package: start check skipped (apt-get install qemu-user libc6-arm64-cross to run each arm64 bootstrap under emulation)"
fi
# The trade-stream service's image context: its arm64 binary on Amazon Linux 2023 (same
# glibc as the functions). No Docker here, so the image itself is built where one exists.
stream_dir=.aws-sam/trade-stream
rm -rf "$stream_dir" && mkdir -p "$stream_dir"
check_arm64 target/lambda/trade-stream/bootstrap
cp target/lambda/trade-stream/bootstrap "$stream_dir/trade-stream"
cp infra/trade-stream.Dockerfile "$stream_dir/Dockerfile"
echo
echo "package: trade-stream service context in $stream_dir ($(stat -c %s "$stream_dir/trade-stream") B binary); to enable it:"
echo "  docker build --platform linux/arm64 -t <ecr-repo>:<tag> $stream_dir && docker push <ecr-repo>:<tag>"
echo "  sam deploy ... --parameter-overrides TradeStreamImage=<ecr-repo>:<tag> TradeStreamSubnets=... TradeStreamSecurityGroups=..."
echo
echo "package: ${#fns[@]} functions built for provided.al2023/arm64 in ${secs}s; zips in $zip_dir"
[ "$status" -eq 0 ] || die "a check above failed: do not deploy these artifacts"
echo "package: deploy with: .venv/bin/sam deploy --guided   (uses $build_dir/template.yaml)"
