#!/usr/bin/env bash
# Builds the Debian package of vipool with cargo-deb.
#
#   deploy/deb/build.sh [--bin PATH] [--out DIR] [--fast]
#
# Builds the release binary (cargo build --release --locked), generates
# the shell completions (bash, zsh, fish: `vipool completions`), the man
# pages (`vipool manpages`) and the package's systemd units (those of
# deploy/systemd with /usr/bin/vipool) into target/deb-staging, and runs
# `cargo deb --no-build`. Prints the path of the .deb on its last line
# (target/debian/vipool_VERSION-1_ARCH.deb unless --out DIR).
#
# --bin PATH packages that binary instead of building one (CI packages
# the one the tests built); --fast compresses less (quicker). The binary
# is stripped. Needs cargo-deb (cargo install cargo-deb
# --locked) and dpkg-dev (dpkg-shlibdeps, for the Depends line).
set -euo pipefail
export LC_ALL=C

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}
BIN=""
OUT=""
FAST=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="${2:-}"; shift ;;
        --bin=*) BIN="${1#*=}" ;;
        --out) OUT="${2:-}"; shift ;;
        --out=*) OUT="${1#*=}" ;;
        --fast) FAST=1 ;;
        -h | --help) usage 0 ;;
        *) echo "build.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build.sh: needs cargo-deb: cargo install cargo-deb --locked" >&2
    exit 2
fi
if ! command -v dpkg-shlibdeps >/dev/null; then
    echo "build.sh: needs dpkg-shlibdeps: apt-get install dpkg-dev" >&2
    exit 2
fi

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "$BIN" ]; then
    echo "build.sh: cargo build --release --locked --bin vipool"
    cargo build --release --locked --bin vipool
    BIN="$TARGET/release/vipool"
fi
[ -x "$BIN" ] || { echo "build.sh: $BIN is not an executable" >&2; exit 1; }

# Generated from the binary's own command-line definitions, so they match
# its --help. Always under ./target: Cargo.toml's assets name these paths.
STAGE="$ROOT/target/deb-staging"
rm -rf "$STAGE"
mkdir -p "$STAGE/completions" "$STAGE/man" "$STAGE/systemd"

# cargo-deb takes the binary from its target directory's release/: a
# binary given with --bin goes into a target directory of its own there
# (never over a release build of the work tree).
case "$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" in
    "$TARGET/release/vipool") ;;
    *)
        mkdir -p "$STAGE/target/release"
        cp "$BIN" "$STAGE/target/release/vipool"
        TARGET="$STAGE/target"
        BIN="$TARGET/release/vipool"
        ;;
esac
"$BIN" completions bash >"$STAGE/completions/vipool"
"$BIN" completions zsh >"$STAGE/completions/_vipool"
"$BIN" completions fish >"$STAGE/completions/vipool.fish"
"$BIN" manpages --out "$STAGE/man"
for unit in "$ROOT"/deploy/systemd/*.service; do
    sed 's#/usr/local/bin/vipool#/usr/bin/vipool#g' "$unit" >"$STAGE/systemd/$(basename "$unit")"
done
for f in "$STAGE"/completions/* "$STAGE"/man/vipool.1 "$STAGE"/systemd/*; do
    [ -s "$f" ] || { echo "build.sh: $f is empty" >&2; exit 1; }
done

# Stripped (a release build keeps line tables, profile.release debug = 1;
# the debug build CI packages is 200 MB with its debug info).
OUT="${OUT:-$ROOT/target/debian}"
mkdir -p "$OUT"
args=(deb -p vipool --no-build --locked --strip --output "$OUT")
[ "$FAST" -eq 0 ] || args+=(--fast)
deb=$(CARGO_TARGET_DIR="$TARGET" cargo "${args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "build.sh: cargo deb made no package ($deb)" >&2; exit 1; }
echo "$deb"
