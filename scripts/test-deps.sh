#!/bin/sh
# What the test suite needs outside of pip: the redis-server binary (the
# Redis backend's tests run against real servers and never skip). Installs
# Debian's redis-server package when the binary is missing and apt-get is
# available (as root, or through sudo without a password); otherwise says
# what to install and fails, so a test run never starts without it.
set -eu
if command -v redis-server >/dev/null 2>&1 || [ -n "${LOGSHELF_REDIS_SERVER:-}" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root="sudo -n"
    else
        echo "test-deps: redis-server is missing; run: sudo apt-get install -y redis-server" >&2
        exit 1
    fi
    echo "test-deps: installing redis-server (apt-get)" >&2
    $as_root apt-get install -y -q redis-server >/dev/null 2>&1 || {
        $as_root apt-get update -q >/dev/null 2>&1
        $as_root apt-get install -y -q redis-server >/dev/null
    }
    # The package may start a system service on 6379; the tests start their
    # own servers on free ports and do not use it.
    command -v redis-server >/dev/null 2>&1 && exit 0
fi
echo "test-deps: redis-server is missing; install it (Debian/Ubuntu: apt-get install" \
    "redis-server, macOS: brew install redis) or set LOGSHELF_REDIS_SERVER" >&2
exit 1
