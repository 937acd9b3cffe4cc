"""Starts an arm64 Lambda bootstrap under qemu-aarch64 (user-mode emulation, Debian's
qemu-user + libc6-arm64-cross) against a loopback stand-in for the Lambda Runtime API, and
checks it gets as far as asking for its first event: proof that the cross-built binary loads
(interpreter, glibc symbols) and initialises, short of AWS. The function's environment is
the template's (Globals + its own), with parameters at their defaults and stand-ins for
resource names, URLs and secrets, so a newly required variable shows up here too.
Usage: arm64_ready.py TEMPLATE LOGICAL_ID BOOTSTRAP
"""
import socket
import subprocess
import sys
import time

from samcli.yamlhelper import yaml_parse

QEMU_SYSROOT = "/usr/aarch64-linux-gnu"  # libc6-arm64-cross: the aarch64 loader and glibc

template_path, logical_id, bootstrap = sys.argv[1:4]
template = yaml_parse(open(template_path).read())
params = template.get("Parameters", {})


def stand_in(name, value):
    """A start-time value for one variable: parameters at their defaults, else a stand-in."""
    # `!If [Has…, set, unset]` on an optional parameter: at its default (empty) the
    # condition is false, so the function starts with the "unset" branch.
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        value = value["Fn::If"][2]
    if isinstance(value, dict) and set(value) == {"Ref"} and "Default" in params.get(value["Ref"], {}):
        value = params[value["Ref"]]["Default"]
    if isinstance(value, (str, int, float)) and "{{resolve:" not in str(value):
        return str(value)
    return "http://127.0.0.1:9/package-check" if name.endswith("_URL") else "package-check"


variables = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
variables.update(template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {}))
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
listener.settimeout(0.2)
DEADLINE_S = 30  # emulated start on a loaded 2-core machine; normally < 1 s
port = listener.getsockname()[1]
env = {name: stand_in(name, value) for name, value in variables.items()}
# What Lambda itself sets; the credentials are never used (nothing is called before an event).
env.update({
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
    "AWS_LAMBDA_FUNCTION_NAME": logical_id,
    "AWS_LAMBDA_FUNCTION_VERSION": "1",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_LOG_STREAM_NAME": "package-check",
    "AWS_LAMBDA_LOG_GROUP_NAME": "package-check",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "package-check",
    "AWS_SECRET_ACCESS_KEY": "package-check",
})
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
