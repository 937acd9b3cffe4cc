#!/usr/bin/env bash
# Makes sure a headless Chromium and its WebDriver (chromedriver) are installed for the
# console's browser tests: Debian's `chromium` and `chromium-driver`, installed with apt-get
# when missing (as root, or through sudo). Prints the chromedriver path.
set -euo pipefail
if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then
  command -v chromedriver
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "browser.sh: chromium and chromium-driver are missing; install them (apt-get install chromium chromium-driver) as root" >&2; exit 1; }
  as_root=(sudo)
fi
echo "browser.sh: installing chromium and chromium-driver (Debian packages)" >&2
"${as_root[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium chromium-driver >&2
command -v chromedriver
