#!/bin/sh
# Install what the browser tests (pytest -m browser) need on Debian: Chromium and fonts.
# Playwright's own browser download is not used; the tests launch /usr/bin/chromium.
# Safe to run again: apt is skipped when Chromium is already installed.
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium fonts-liberation fonts-dejavu-core
