#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each on the stable toolchain
# (RUSTC_BOOTSTRAP=1). Seeds come from fuzz/corpus/<target> (committed); new inputs go to
# fuzz/work/<target>, crashes to fuzz/artifacts/<target>. Prints executions per target; fails if
# any target found a crash, a hang or ran out of memory.
#
#   scripts/fuzz.sh SECONDS           optimised, with the address sanitizer (`make fuzz`)
#   scripts/fuzz.sh SECONDS --smoke   a debug build (overflow checks and debug assertions on), no
#                                     sanitizer: builds in ~2 min instead of ~10 (`make test`)
set -euo pipefail
SECONDS_EACH=${1:-60}
MODE=${2:-}
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
# The box's library links libvosk.so; the fuzz binaries find it where `make deps` put it.
host=$(rustc -vV | sed -n 's/^host: //p')
export LD_LIBRARY_PATH="$PWD/../.deps/vosk/$host${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
if [ "$MODE" = "--smoke" ]; then
  build=(--dev -s none)
  # Its own folder: switching between the two builds must not rebuild either.
  export CARGO_TARGET_DIR="$PWD/target/smoke"
  echo "==> building the fuzz targets (debug, no sanitizer)"
else
  build=(-O)
  echo "==> building the fuzz targets (optimised, address sanitizer)"
fi
# (`cargo fuzz run -O` builds with other debug-info settings than `cargo fuzz build -O`: the
# optimised targets are built by their first run instead, once.)
if [ "$MODE" = "--smoke" ]; then
  cargo fuzz build "${build[@]}"
fi
failed=()
mkdir -p work
printf "%-20s %12s %10s\n" target executions exec/s > work/summary.txt
for target in $(cargo fuzz list); do
  mkdir -p "work/$target"
  log="work/$target.log"
  echo "==> fuzzing $target for ${SECONDS_EACH}s"
  if cargo fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
       -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    :
  else
    failed+=("$target")
    tail -n 40 "$log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  printf '%-20s %12s %10s\n' "$target" "${runs:-?}" "${rate:-?}" >> work/summary.txt
done
cat work/summary.txt
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> crashes or hangs in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
