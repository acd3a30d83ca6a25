#!/usr/bin/env bash
# Instructions per request of every case (callgrind; run.sh calls it after criterion).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bin count
bin=target/release/count
total() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '\n%-45s %12s\n' case instructions/request
"$bin" 999 0 2>&1 | while IFS= read -r line; do
  i=${line%%:*}
  name=${line#*: }
  one=$(total "$i" 1)
  many=$(total "$i" 1001)
  printf '%-45s %12d\n' "$name" $(((many - one) / 1000))
done
