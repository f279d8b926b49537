#!/usr/bin/env bash
# Interlock side by side with cqrs-es 0.5 (MemStore and postgres-es) on the same workloads, the
# same PostgreSQL server and pool size, plus the raw floors; prints a markdown table.
#
#   benches/compare.sh           the full comparison (about ten minutes on 2 cores)
#   benches/compare.sh --smoke   tiny sizes, one round: checks every result quickly (CI)
#
# The server is INTERLOCK_PG_URL (default postgres://postgres@127.0.0.1:5432/test); each run
# works in a schema of its own and drops it. Builds go to CARGO_TARGET_DIR (default target/), the
# cqrs-es side to its cqrs-es-side/ subdirectory. Exits non-zero when a binary fails or an Interlock
# or floor result is wrong (cqrs-es's wrong results are reported in the table, not fatal).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

# The smoke only checks results, so it builds the debug profile: in CI that reuses the test
# build instead of compiling the whole graph again in release.
if [ "$smoke" = 1 ]; then profile=dev; dir=debug; else profile=release; dir=release; fi
target="${CARGO_TARGET_DIR:-target}"
echo "== building both sides ($profile)" >&2
cargo build --profile "$profile" --locked -p interlock-benches --bin interlock-side >&2
# The cqrs-es side is its own workspace (see its Cargo.toml) with its own lock file and target.
CARGO_TARGET_DIR="$target/cqrs-es-side" cargo build --profile "$profile" --locked \
  --manifest-path benches/cqrs-es-side/Cargo.toml >&2
ours=$target/$dir/interlock-side
theirs=$target/cqrs-es-side/$dir/cqrs-es-side

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
: > "$results"

# One measurement: the binary's JSON lines go to the results (MemStore prints its own lines on
# stdout too; they are dropped here).
run() {
  echo "   $*" >&2
  "$@" > "$work/out"
  grep '^{' "$work/out" >> "$results" || true
}

# workload store full-n smoke-n [sides]: rounds alternate the sides (A, B, A, B) to spread noise.
measure() {
  local workload=$1 store=$2 n=$3 smoke_n=$4 sides=${5:-both}
  local rounds=2
  if [ "$smoke" = 1 ]; then n=$smoke_n; rounds=1; fi
  echo "== $workload $store (n=$n)" >&2
  for _ in $(seq "$rounds"); do
    case $sides in
      both) run "$ours" "$workload" "$store" "$n"; run "$theirs" "$workload" "$store" "$n" ;;
      ours) run "$ours" "$workload" "$store" "$n" ;;
    esac
  done
}

measure w1 memory 20000 200
measure w1 postgres 2000 100
measure floor-w1 postgres 2000 100 ours
measure w1 sqlite 1000 50 ours
measure floor-w1 sqlite 1000 50 ours
measure w2 memory 20000 2000
measure w2 postgres 20000 2000
measure w3 memory 500000 5000
measure w3 postgres 100000 5000
measure w4 memory 50 5
measure w4 postgres 25 5
measure w5 memory 20000 1000 ours
measure w5 postgres 20000 1000

pg_version="$(psql "${INTERLOCK_PG_URL:-postgres://postgres@127.0.0.1:5432/test}" -Atc 'show server_version' 2>/dev/null || echo unknown)"
echo "## Interlock vs cqrs-es 0.5$([ "$smoke" = 1 ] && echo ' (smoke sizes: not a measurement)')"
echo
echo "Command: \`benches/compare.sh$([ "$smoke" = 1 ] && echo ' --smoke')\`. Machine: $(nproc) cores," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(rustc --version)," \
  "PostgreSQL $pg_version (synchronous_commit=on, fsync=on), SQLite WAL + synchronous=FULL." \
  "Both sides: tokio with 2 workers, 10 pooled PostgreSQL connections. Best of $([ "$smoke" = 1 ] && echo 1 || echo 2) alternating rounds."
echo
# Kept for a second look: `target/release/interlock-side report target/compare-results.jsonl`.
cp "$results" "$target/compare-results.jsonl"
"$ours" report "$results"
