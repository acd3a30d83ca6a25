#!/usr/bin/env bash
# The hot path at OLD_REV (default 67f9b42, the tree before the hot-path work of issue 15; 88284ab was the floor-plan change's parent) and at the working
# tree, side by side in one binary: interleaved wall-time ratios (`count ratio`), criterion, and
# callgrind (instructions per request).
set -euo pipefail
cd "$(dirname "$0")"
rev=${1:-67f9b42}
rm -rf ../target/rev-old
mkdir -p ../target/rev-old
git -C .. archive "$rev" | tar -x -C ../target/rev-old
# Two packages of one name and version cannot share a lock file: the old one gets a version of its own.
sed -i '0,/^version = .*/s//version = "0.0.0-old"/' ../target/rev-old/Cargo.toml
cargo build --release --bin count
target/release/count ratio 15
cargo bench --bench revisions -- --warm-up-time 1 --measurement-time 3
./counts.sh
