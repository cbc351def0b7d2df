#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short while (FUZZ_SECONDS, default 20), from
# its committed seeds (seeds/<target>/, made by seeds/make.py) and the corpus it grew before
# (corpus/<target>/, not committed), with its dictionary from dicts/ when it has one. Each
# run's final figures (executions, coverage, peak memory) are printed; a crash, a leak, a
# timeout or running out of memory fails the script and leaves the input in artifacts/<target>/.
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them, since no other toolchain can be installed here.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in $(cargo fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  args=(-max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "dicts/$target.dict" ]; then
    args+=(-dict="dicts/$target.dict")
  fi
  mkdir -p "corpus/$target"
  seeds=()
  if [ -d "seeds/$target" ]; then
    seeds=("seeds/$target")
  fi
  log="$(mktemp)"
  if ! cargo fuzz run "$target" "corpus/$target" ${seeds[@]+"${seeds[@]}"} -- "${args[@]}" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
  rm -f "$log"
done
