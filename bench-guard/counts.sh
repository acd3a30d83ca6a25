#!/usr/bin/env bash
# Instructions per request of every case of the hot-path table (BENCHMARKS.md), by callgrind:
# each case runs 1 and 1001 times inside `measure` (the only function counted), and the
# difference / 1000 is one request, warm. Valgrind runs SHA-256 in software (it hides SHA-NI),
# so the script also counts sha2's compression function in each case and prices its blocks at
# SHA_NI_PER_BLOCK instructions each instead (column "priced"). Ratios are to the bare router
# handling the same request (`BASELINE` in src/lib.rs).
#   ./counts.sh            every case
#   ./counts.sh 9 10       some cases, by index (`target/release/count list`); their baselines
#                          are counted too
set -euo pipefail
cd "$(dirname "$0")"
# Instructions of one 64-byte SHA-256 block with SHA-NI (sha2's x86 backend: 32 sha256rnds2
# plus the message schedule, loads and shuffles): about 300.
SHA_NI_PER_BLOCK=${SHA_NI_PER_BLOCK:-300}
cargo build --locked --release --bin count --quiet
bin=target/release/count
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# "total sha": instructions counted inside `measure`, and the part in sha2's compression.
measure() {
  local file="$out/cg.$1.$2"
  valgrind --tool=callgrind --toggle-collect='*count::measure*' \
    --callgrind-out-file="$file" "$bin" "$1" "$2" >/dev/null 2>&1
  local total sha
  total=$(callgrind_annotate --inclusive=no --auto=no "$file" 2>/dev/null \
    | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  sha=$(callgrind_annotate --inclusive=yes --auto=no "$file" 2>/dev/null \
    | grep -E 'sha2::sha256::soft::compress|sha256::compress256' | head -1 \
    | sed -n 's/^ *\([0-9,]*\) .*/\1/p' | tr -d , || true)
  echo "${total:-0} ${sha:-0}"
}
list=$("$bin" list 2>&1)
if [ "$#" -gt 0 ]; then wanted="$*"; else wanted=$(echo "$list" | cut -d: -f1); fi
# One block in software: a 43-byte key is one block.
read -r _ p1 < <(measure sha 1)
read -r _ pn < <(measure sha 1001)
per_block=$(((pn - p1) / 1000))
echo "SHA-256: one block is $per_block instructions in software; priced at $SHA_NI_PER_BLOCK (SHA-NI)"
declare -A raw priced
count() {
  local i=$1
  [ -n "${raw[$i]:-}" ] && return
  local t1 s1 tn sn
  read -r t1 s1 < <(measure "$i" 1)
  read -r tn sn < <(measure "$i" 1001)
  local per=$(((tn - t1) / 1000)) sha=$(((sn - s1) / 1000)) blocks=0
  if [ "$per_block" -gt 0 ]; then blocks=$(((sha + per_block / 2) / per_block)); fi
  raw[$i]=$per
  priced[$i]=$((per - sha + blocks * SHA_NI_PER_BLOCK))
  shas[$i]=$blocks
}
declare -A shas
printf '%-45s %9s %7s %9s %8s %8s\n' case instr blocks priced "× raw" "× priced"
for i in $wanted; do
  line=$(echo "$list" | grep "^$i:")
  base=$(echo "$line" | cut -d: -f2)
  name=${line#*:*: }
  count "$base"
  count "$i"
  awk -v n="$name" -v r="${raw[$i]}" -v b="${shas[$i]}" -v p="${priced[$i]}" \
      -v br="${raw[$base]}" -v bp="${priced[$base]}" \
      'BEGIN { printf "%-45s %9d %7d %9d %7.2f× %7.2f×\n", n, r, b, p, r / br, p / bp }'
done
