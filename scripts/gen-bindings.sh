#!/usr/bin/env bash
# Regenerates src/ffi.rs from csrc/cuattn_internal.h (which includes the public csrc/cuattn.h)
# with the project's one bindgen configuration (tests/bindings.rs). Needs libclang (Debian:
# libclang1-14).
set -euo pipefail
cd "$(dirname "$0")/.."
CUATTN_BLESS_BINDINGS=1 cargo test --release --test bindings -- --nocapture
