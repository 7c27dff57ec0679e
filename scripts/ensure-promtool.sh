#!/bin/sh
# Install the deployment checkers from Debian's packages when missing; idempotent, never fails the build:
#   promtool        (package `prometheus`)      `promtool check rules|config`, `promtool test rules`
#   docker-compose  (package `docker-compose`)  validates docker-compose.yml against the Compose schema,
#                                               no Docker daemon needed
#   amtool          (package `prometheus-alertmanager`)  `amtool check-config` of deploy/alertmanager
# tests/unit/deploy skip those checks, saying why, when a tool is absent.
set -eu

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
if [ -z "$missing" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: missing$missing and no apt-get; those checks will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "ensure-promtool: not root and no sudo; the checks needing$missing will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# The prometheus package's post-install only enables a systemd unit; nothing is started in a container.
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    echo "ensure-promtool: installing$missing from Debian failed; those checks will be skipped" >&2
    exit 0
fi
echo "ensure-promtool: installed$missing"
