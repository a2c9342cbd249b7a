#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, the no_std core for Cortex-M4F, all tests (the firmware on
# every emulated core under QEMU against the host), and a sweep as a Slurm array job on a local single-node Slurm.
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

# A from-scratch build gains nothing from incremental caches, and they cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# The firmware's cores (dualform_protocol::BOARDS): Cortex-M0, M3, M4F and M7, M33 and M55, RISC-V RV32IMAC.
for target in thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf thumbv8m.main-none-eabihf \
  riscv32imac-unknown-none-elf; do
  need_target "$target"
done
need_component rustfmt
need_component clippy

# The firmware links with flip-link and runs under QEMU.
if ! command -v flip-link >/dev/null; then
  echo "== cargo install flip-link --locked"
  cargo install flip-link --locked --version 0.1.12 ||
    { echo "error: could not install flip-link; run: cargo install flip-link --locked" >&2; exit 1; }
fi
# `cargo run` in firmware-example (its runner, qemu-run) and the harness's firmware checks decode the firmware's
# defmt output with defmt-print.
if ! command -v defmt-print >/dev/null; then
  echo "== cargo install defmt-print --locked"
  cargo install defmt-print --locked --version 1.2.0 ||
    { echo "error: could not install defmt-print; run: cargo install defmt-print --locked" >&2; exit 1; }
fi
# Installs a Debian package when run as root, or stops with one line saying what to install.
need_apt() { # need_apt "PACKAGE..." MESSAGE
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install $1"
    # shellcheck disable=SC2086 # $1 is a list of packages
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $1 >/dev/null; } ||
      { echo "error: could not install $1; $2" >&2; exit 1; }
  else
    echo "error: $2" >&2
    exit 1
  fi
}
command -v qemu-system-arm >/dev/null ||
  need_apt qemu-system-arm "qemu-system-arm not found; install it (Debian/Ubuntu: sudo apt-get install qemu-system-arm)"
command -v qemu-system-riscv32 >/dev/null ||
  need_apt qemu-system-misc "qemu-system-riscv32 not found; install it (Debian/Ubuntu: sudo apt-get install qemu-system-misc)"
# The sweep's Slurm check starts a local single-node Slurm.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  need_apt "slurm-wlm munge" "Slurm or munge not found; install them (Debian/Ubuntu: sudo apt-get install slurm-wlm munge)"
fi
# The training plot needs a TrueType font (the tests check that curves.png is written).
if [ -z "${DUALFORM_FONT:-}" ] && ! ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1; then
  need_apt fonts-dejavu-core "no TrueType font for the plots; install fonts-dejavu-core or set DUALFORM_FONT to a .ttf file"
fi

# Each step says when it starts (seconds since the start), so a slow step shows in the log.
step() { echo "== $* (at ${SECONDS} s)"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The core for thumbv7em-none-eabihf with defmt is built by every firmware build (the board build below, the QEMU
# builds of the tests); here it is built without.
step "core for thumbv7em-none-eabihf (without defmt)"
cargo build -p dualform --release --locked --target thumbv7em-none-eabihf
step "firmware: fmt, clippy (Cortex-M4F and RISC-V) and the board build"
# The board build shares the firmware's target folder with the QEMU builds of the tests: they reuse its dependencies.
(cd firmware-example && cargo fmt -- --check && cargo clippy --release --locked --all-targets -- -D warnings &&
  DUALFORM_BOARD=sifive_e cargo clippy --release --locked --target riscv32imac-unknown-none-elf --all-targets -- -D warnings &&
  cargo build --release --locked --no-default-features --features board)
step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
step "the core with its declared minimum Rust version, for the Cortex-M4F"
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1 ||
  ! rustup target list --toolchain "$msrv" --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf; then
  echo "== rustup toolchain install $msrv --profile minimal --target thumbv7em-none-eabihf"
  rustup toolchain install "$msrv" --profile minimal --target thumbv7em-none-eabihf ||
    { echo "error: could not install Rust $msrv; run: rustup toolchain install $msrv --profile minimal --target thumbv7em-none-eabihf" >&2; exit 1; }
fi
cargo "+$msrv" check -p dualform --locked --target thumbv7em-none-eabihf --features defmt --target-dir target/msrv
# The tests run optimised, in the release profile: one build of the dependencies and the harness serves the tests,
# the binary they run and the benches (without overflow checks; no code here relies on them, and the core's integer
# arithmetic is on sizes or saturating).
# Every target in one build: libraries, binaries, integration tests, examples, and the benches, each bench run once as
# a test (they are timed by hand: cargo bench -p dualform-benches); then the doc examples, which these flags leave
# out. Not --all-targets: it also builds the targets marked `test = false` as tests, among them the harness library,
# which has none (a second full compile of the harness).
step "cargo test --release (core, harness, firmware under QEMU against the host, benches once each)"
cargo test --workspace --locked --release --tests --benches --examples
step "doc examples"
cargo test --workspace --locked --release --doc
# A sweep as a Slurm array job on a single-node Slurm started here, against the same sweep unsharded.
step "sweep as a Slurm array on a local single-node Slurm"
bash slurm/local-check.sh target/release/dualform
step "done"
