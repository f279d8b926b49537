#!/bin/sh
# Installs the MongoDB-wire test server the integration tests start: SecantusDB, pinned.
# Idempotent: does nothing when the pinned version is already installed.
#
# SecantusDB is GPL software. The tests only ever run it as a separate process
# (`secantusd-py` on 127.0.0.1 with a temporary storage directory); nothing links it.
#
# Usage: crates/interlock-mongodb/install-test-server.sh   (PYTHON=python3.12 to pick one)
set -eu

VERSION="0.7.0b3"
PYTHON="${PYTHON:-python3}"

installed="$("$PYTHON" -m pip show SecantusDB 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$installed" = "$VERSION" ]; then
    echo "SecantusDB $VERSION is already installed"
else
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "SecantusDB==$VERSION"
    echo "installed SecantusDB $VERSION"
fi

if ! command -v secantusd-py >/dev/null 2>&1; then
    echo "warning: secantusd-py is not on PATH; add pip's script directory to PATH or set" >&2
    echo "INTERLOCK_SECANTUS_BIN to its full path for the tests to find it" >&2
fi
