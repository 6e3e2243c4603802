#!/usr/bin/env bash
# The project's test command (README, CI): builds everything and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --release --locked
cargo test --workspace --release --locked "$@"
