#!/usr/bin/env bash
# Install the browser the web tests drive (tests/web): Debian's chromium, plus a text font.
# Idempotent: does nothing when /usr/bin/chromium already runs. Needs root (or sudo) for apt-get.
# The Python driver (playwright, in .venv through the project's test extra) talks to this
# browser directly; never run `playwright install` (its browser download cannot reach its host here).
# usage: tools/install_browser.sh
set -euo pipefail
BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ] && "$BROWSER" --version >/dev/null 2>&1; then
  echo "install_browser: ok ($("$BROWSER" --version))"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install_browser: $BROWSER is missing and installing it needs root (apt-get install chromium fonts-liberation)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation
echo "install_browser: ok ($("$BROWSER" --version))"
