#!/usr/bin/env bash
# Seed corpora for every fuzz target, from the simulator's own frames and answers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p polytape-sim --example fuzz_seeds -- fuzz/corpus
