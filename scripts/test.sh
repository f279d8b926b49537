#!/usr/bin/env bash
# The whole test suite, with its set-up: `make test` runs this.
# Arguments go to both `cargo test` runs (e.g. `-p interlock-sqlite`).
#
# - PostgreSQL: tests use $INTERLOCK_PG_URL (default: the local server at 127.0.0.1:5432). If no
#   server answers, they print a notice and skip, unless INTERLOCK_REQUIRE_PG=1 (set in CI).
# - MongoDB wire protocol: tests start the pinned SecantusDB test server (installed here with
#   pip, run as a separate process), or use $MONGODB_URI. Without either they skip, unless
#   INTERLOCK_REQUIRE_MONGO=1 (set in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

export INTERLOCK_PG_URL="${INTERLOCK_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"

pg_up() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q
}
if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
    # These machines ship a cluster that may simply be stopped.
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 20); do pg_up && break; sleep 0.5; done
fi
if pg_up; then
    echo "PostgreSQL: $INTERLOCK_PG_URL"
elif [ "${INTERLOCK_REQUIRE_PG:-0}" = 1 ]; then
    echo "PostgreSQL is required (INTERLOCK_REQUIRE_PG=1) but no server answers at 127.0.0.1:5432" >&2
    exit 1
else
    echo "notice: no PostgreSQL server at 127.0.0.1:5432; its tests will be skipped" >&2
fi

if [ -z "${MONGODB_URI:-}" ] && [ -x crates/interlock-mongodb/install-test-server.sh ]; then
    if ! crates/interlock-mongodb/install-test-server.sh; then
        if [ "${INTERLOCK_REQUIRE_MONGO:-0}" = 1 ]; then
            echo "the MongoDB-wire test server could not be installed" >&2
            exit 1
        fi
        echo "notice: the MongoDB-wire test server could not be installed; its tests will be skipped" >&2
    fi
    # pip puts the server's launcher in the interpreter's script directory, which may not be
    # on PATH (a pyenv or --user install): point the tests at it.
    if [ -z "${INTERLOCK_SECANTUS_BIN:-}" ] && ! command -v secantusd-py >/dev/null 2>&1; then
        scripts_dir="$(${PYTHON:-python3} -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
        if [ -n "$scripts_dir" ] && [ -x "$scripts_dir/secantusd-py" ]; then
            export INTERLOCK_SECANTUS_BIN="$scripts_dir/secantusd-py"
        fi
    fi
fi

cargo test --workspace --all-features --locked "$@"

# The slow reliability tests (database restarts, kill loops, the load test) are `#[ignore]`d so
# a plain `cargo test` stays quick; the whole suite runs them here, doc tests excepted (their
# `ignore` blocks are not meant to compile). INTERLOCK_SKIP_SLOW=1 leaves them out.
if [ "${INTERLOCK_SKIP_SLOW:-0}" != 1 ]; then
    echo "== slow tests (ignored by a plain cargo test)"
    cargo test --workspace --all-features --locked --tests "$@" -- --ignored
fi
