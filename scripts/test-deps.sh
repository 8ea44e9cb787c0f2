#!/bin/sh
# What the test suite needs outside of pip: the redis-server and redis-cli
# binaries (the Redis backend's tests run against real servers and a real
# Cluster, and never skip) and openssl (the TLS test makes a certificate).
# Installs the Debian packages that are missing when apt-get is available
# (as root, or through sudo without a password); otherwise says what to
# install and fails, so a test run never starts without them.
set -eu
missing=""
if [ -z "${LOGSHELF_REDIS_SERVER:-}" ]; then
    command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
    command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
fi
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root="sudo -n"
    else
        echo "test-deps: missing$missing; run: sudo apt-get install -y$missing" >&2
        exit 1
    fi
    echo "test-deps: installing$missing (apt-get)" >&2
    # shellcheck disable=SC2086  # one word per package
    $as_root apt-get install -y -q $missing >/dev/null 2>&1 || {
        $as_root apt-get update -q >/dev/null 2>&1
        $as_root apt-get install -y -q $missing >/dev/null
    }
    # The package may start a system service on 6379; the tests start their
    # own servers on free ports and do not use it.
    exit 0
fi
echo "test-deps: missing$missing; install them (Debian/Ubuntu: apt-get install" \
    "redis-server openssl, macOS: brew install redis openssl) or set LOGSHELF_REDIS_SERVER" >&2
exit 1
