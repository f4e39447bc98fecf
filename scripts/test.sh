#!/usr/bin/env bash
# The test command (README): unit + integration tests, then the browser end-to-end test in
# headless Chromium inside a private network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build"
cargo build --workspace --bins
echo "== cargo test (unit + integration, whole workspace)"
cargo test --workspace --all-targets
echo "== browser end-to-end (headless Chromium)"
bash tests/browser/run.sh
