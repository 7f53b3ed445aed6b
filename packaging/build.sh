#!/usr/bin/env bash
# Builds every Hoist package into $CARGO_TARGET_DIR/packages (default target/packages):
# hoist-agent and hoist (coordinator + CLI), each as .deb and .rpm.
#
# Installs the pinned packaging tools when they are missing, builds the release binaries
# once, then packages them without rebuilding. Run from anywhere; no arguments.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
out=$target_dir/packages

step() { echo; echo "=== $* ==="; }

# Installs a cargo subcommand at a pinned version unless that version is already there.
ensure_tool() {
    local crate=$1 version=$2 bin=$3
    if command -v "$bin" >/dev/null 2>&1 && "$bin" --version 2>/dev/null | grep -qF "$version"; then
        return
    fi
    step "installing $crate $version"
    cargo install "$crate@$version" --locked
}

ensure_tool cargo-deb "$CARGO_DEB_VERSION" cargo-deb
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" cargo-generate-rpm

step "release build"
cargo build --release -p hoist-agent -p hoist-coordinator --locked

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm

step "deb packages"
for pkg in hoist-agent hoist-coordinator; do
    cargo deb -p "$pkg" --no-build --output "$out/"
done

step "rpm packages"
# cargo-generate-rpm's -p takes the crate's directory.
for dir in agent coordinator; do
    cargo generate-rpm -p "$dir" --target-dir "$target_dir" -o "$out/"
done

step "packages in $out"
ls -l "$out"
