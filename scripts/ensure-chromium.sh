#!/bin/sh
# Make sure Debian's Chromium (and a Chinese font, so the dashboard's labels render) is installed
# for the dashboard's browser test. Idempotent: skips when both are present; installs with apt-get
# when run as root; otherwise says what to do.
set -eu
FONT=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
if [ -x /usr/bin/chromium ] && [ -f "$FONT" ]; then
    echo "chromium: present at /usr/bin/chromium (with a CJK font)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium: /usr/bin/chromium missing and not root; run: sudo apt-get install -y chromium fonts-wqy-microhei" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: /usr/bin/chromium missing and no apt-get here; the browser test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei
echo "chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo '(version unknown)')"
