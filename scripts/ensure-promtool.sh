#!/bin/sh
# Make sure promtool is installed (Debian's `prometheus` package ships it); idempotent.
# tests/unit/deploy check the alert rules with `promtool check rules` / `promtool test rules`
# and skip those two checks, saying why, when promtool is absent.
set -eu

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: no promtool and no apt-get; the promtool checks will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "ensure-promtool: not root and no sudo; the promtool checks will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# The package's post-install script only enables a systemd unit; nothing is started in a container.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    echo "ensure-promtool: installing Debian's prometheus package failed; the promtool checks will be skipped" >&2
    exit 0
fi
promtool --version 2>&1 | head -1
