#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short while (FUZZ_SECONDS, default 20), with
# its dictionary from dicts/ when it has one.
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them, since no other toolchain can be installed here.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  dict=()
  if [ -f "dicts/$target.dict" ]; then
    dict=(-dict="dicts/$target.dict")
  fi
  cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 ${dict[@]+"${dict[@]}"}
done
