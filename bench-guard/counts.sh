#!/usr/bin/env bash
# Instructions per request of every case of the hot-path table (BENCHMARKS.md), by callgrind:
# each case runs 1 and 1001 times inside `measure` (the only function counted), and the
# difference / 1000 is one request, warm. Valgrind runs SHA-256 in software (it hides SHA-NI),
# so the script also counts the software compression function in each case and prices it at
# SHA_NI_PER_BLOCK instructions per 64-byte block instead (column "SHA-NI priced").
#   ./counts.sh            every case
#   ./counts.sh 9 10       some cases, by index (`cargo run --release --bin count -- list`)
set -euo pipefail
cd "$(dirname "$0")"
# Instructions of one SHA-256 block with SHA-NI (sha2's x86 backend, 4 rounds per sha256rnds2
# pair plus the message schedule and loads): about 300.
SHA_NI_PER_BLOCK=${SHA_NI_PER_BLOCK:-300}
cargo build --locked --release --bin count --quiet
bin=target/release/count
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Total counted instructions, and the part inside sha2's software compression.
measure() { # index n -> "total sha"
  local file="$out/cg.$1.$2"
  valgrind --tool=callgrind --toggle-collect='*count::measure*' \
    --callgrind-out-file="$file" "$bin" "$1" "$2" >/dev/null 2>&1
  local total sha
  total=$(callgrind_annotate --inclusive=no "$file" 2>/dev/null \
    | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  sha=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null \
    | grep -E 'sha2::sha256::soft::compress|sha256::compress256' | head -1 \
    | sed -n 's/^ *\([0-9,]*\) .*/\1/p' | tr -d , || true)
  echo "${total:-0} ${sha:-0}"
}
names=$("$bin" list 2>&1)
if [ "$#" -gt 0 ]; then indexes="$*"; else indexes=$(echo "$names" | cut -d: -f1); fi
# The software cost of one block: a 43-byte key is one block.
read -r _ p1 < <(measure sha 1)
read -r _ pn < <(measure sha 1001)
per_block=$(((pn - p1) / 1000))
echo "SHA-256, one block in software: $per_block instructions; priced at $SHA_NI_PER_BLOCK with SHA-NI"
printf '%-45s %10s %10s %7s %14s\n' case instr/req sha-soft blocks "SHA-NI priced"
for i in $indexes; do
  name=$(echo "$names" | sed -n "s/^$i: //p")
  read -r t1 s1 < <(measure "$i" 1)
  read -r tn sn < <(measure "$i" 1001)
  per=$(((tn - t1) / 1000))
  sha=$(((sn - s1) / 1000))
  blocks=0
  if [ "$per_block" -gt 0 ]; then blocks=$(((sha + per_block / 2) / per_block)); fi
  printf '%-45s %10d %10d %7d %14d\n' "$name" "$per" "$sha" "$blocks" $((per - sha + blocks * SHA_NI_PER_BLOCK))
done
