#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, the no_std core for Cortex-M4F, all tests.
# It installs what it needs through rustup (and apt when run as root), or stops with one line saying what to install.
set -euo pipefail
cd "$(dirname "$0")"

need_target() {
  if ! rustup target list --installed 2>/dev/null | grep -qx "$1"; then
    echo "== rustup target add $1"
    rustup target add "$1" || { echo "error: could not install the Rust target $1; run: rustup target add $1" >&2; exit 1; }
  fi
}
need_component() {
  if ! rustup component list --installed 2>/dev/null | grep -q "^$1"; then
    echo "== rustup component add $1"
    rustup component add "$1" || { echo "error: could not install $1; run: rustup component add $1" >&2; exit 1; }
  fi
}

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
need_target thumbv7em-none-eabihf
need_component rustfmt
need_component clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== core for thumbv7em-none-eabihf (with and without defmt)"
cargo build -p dualform --release --locked --target thumbv7em-none-eabihf
cargo build -p dualform --release --locked --target thumbv7em-none-eabihf --features defmt
echo "== cargo test"
cargo test --workspace --locked
