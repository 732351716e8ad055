#!/usr/bin/env bash
# The GPU check (issue 17): builds cria with the `vulkan` feature, runs the model-parity tests
# (logits against the committed transformers fixtures) and the training-trajectory tests
# (PyTorch's 10 AdamW steps) on the Vulkan device, then times training steps of the benchmark
# model there and on the CPU. Meant for a machine with a Vulkan GPU driver (Mesa's software
# llvmpipe 22.3 of Debian 12 crashes compiling burn's first compute pipeline, so it is no
# stand-in); about 25 minutes of building on 2 cores, less on 16.
#
#   scripts/device/check.sh [STEPS]      # prints the figures; writes $OUT/device-check.txt if OUT is set
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-5}"
out="${OUT:-/tmp}/device-check.txt"
command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName|apiVersion" | tee "$out" || echo "vulkaninfo not installed" | tee "$out"
cargo build --release --features vulkan -p cria --example bench
export CRIA_DEVICE=vulkan
cargo test --release --features vulkan -p cria-core --test parity 2>&1 | tail -3 | tee -a "$out"
cargo test --release -p cria-train --features cria-core/vulkan --test reference 2>&1 | tail -3 | tee -a "$out"
echo "training step, bench model (13.8M, 8 x 256 tokens), Vulkan:" | tee -a "$out"
./target/release/examples/bench train "$steps" | tee -a "$out"
echo "the same on the CPU (flex):" | tee -a "$out"
CRIA_DEVICE=cpu ./target/release/examples/bench train "$steps" | tee -a "$out"
