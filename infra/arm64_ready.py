"""Starts an arm64 Lambda bootstrap under qemu-aarch64 (user-mode emulation, Debian's
qemu-user + libc6-arm64-cross) against a loopback stand-in for the Lambda Runtime API, and
checks it gets as far as asking for its first event: proof that the cross-built binary loads
(interpreter, glibc symbols) and initialises, short of AWS. Usage: arm64_ready.py BOOTSTRAP
"""
import socket
import subprocess
import sys
import time

QEMU_SYSROOT = "/usr/aarch64-linux-gnu"  # libc6-arm64-cross: the aarch64 loader and glibc

bootstrap = sys.argv[1]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
listener.settimeout(0.2)
DEADLINE_S = 30  # emulated start on a loaded 2-core machine; normally < 1 s
port = listener.getsockname()[1]
# What every function reads at start (configuration only; nothing is called before an event).
env = {
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
    "AWS_LAMBDA_FUNCTION_NAME": "package-check",
    "AWS_LAMBDA_FUNCTION_VERSION": "1",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_LOG_STREAM_NAME": "package-check",
    "AWS_LAMBDA_LOG_GROUP_NAME": "package-check",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "package-check",
    "AWS_SECRET_ACCESS_KEY": "package-check",
    "TABLE_NAME": "package-check",
    "QUEUE_URL": "http://127.0.0.1:9/q",
    "EVENT_BUS_NAME": "package-check",
    "WEBHOOK_SECRET": "package-check",
    "BROKER": "alpaca",
    "ALPACA_API_KEY_ID": "package-check",
    "ALPACA_API_SECRET_KEY": "package-check",
}
start = time.monotonic()
proc = subprocess.Popen(
    ["qemu-aarch64", "-L", QEMU_SYSROOT, bootstrap],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
)
ok = False
detail = f"made no Runtime API request in {DEADLINE_S} s"
try:
    while time.monotonic() - start < DEADLINE_S:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            if proc.poll() is not None:  # exited (or never loaded): no need to wait on
                detail = f"exited with {proc.returncode} before asking for an event"
                break
            continue
        conn.settimeout(5)
        request_line = conn.recv(512).decode(errors="replace").split("\r\n")[0]
        ok = "/runtime/invocation/next" in request_line
        ms = (time.monotonic() - start) * 1e3
        detail = f"asked for its first event after {ms:.0f} ms" if ok else f"sent {request_line!r}"
        break
finally:
    proc.kill()
    out = proc.communicate()[0].decode(errors="replace").strip()
if not ok and out:
    detail += f"; output: {out[-2000:]}"
print(f"{bootstrap}: {detail}")
sys.exit(0 if ok else 1)
