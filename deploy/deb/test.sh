#!/usr/bin/env bash
# Checks the vipool Debian package in a clean Debian root (as root).
#
#   deploy/deb/test.sh PACKAGE.deb
#
# 1. The package: every file of deploy/deb/contents.txt is in it, its
#    files under /etc are conffiles, postinst and postrm are there.
# 2. A clean root: `debootstrap --variant=minbase --include=systemd,procps` of
#    this host's Debian release from the mirror this host's apt uses
#    (VIPOOL_DEB_MIRROR=URL to choose another) into a temporary directory,
#    the package installed there with dpkg in a chroot. In the chroot:
#    `vipool --version` prints the package's version; `vipool
#    check-config --syntax-only` accepts each example in /etc/vipool; the
#    vipool user exists, /var/lib/vipool is 0700 vipool:vipool and
#    /etc/vipool/pki 0750 root:vipool; `systemd-analyze verify` passes
#    both units without a warning; `dpkg --purge` leaves none of the
#    package's files. The root is removed on exit.
set -euo pipefail
export LC_ALL=C

[ $# -eq 1 ] || { echo "usage: deploy/deb/test.sh PACKAGE.deb" >&2; exit 2; }
DEB="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ -f "$DEB" ] || { echo "test.sh: no package $DEB" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test.sh: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "test.sh: needs debootstrap: apt-get install debootstrap" >&2; exit 2; }

FAILURES=0
PASSED=0
fail() { echo "FAILED: $*"; FAILURES=$((FAILURES + 1)); }
ok() { echo "ok: $*"; PASSED=$((PASSED + 1)); }

# ---------------------------------------------------------------- the package

echo "== contents of $(basename "$DEB")"
have=$(dpkg-deb -c "$DEB" | awk '{ print $NF }' | sed 's#^\.##')
missing=0
while read -r path; do
    case "$path" in '' | '#'*) continue ;; esac
    if ! grep -qxF "$path" <<<"$have"; then
        fail "the package lacks $path"
        missing=$((missing + 1))
    fi
done <"$HERE/contents.txt"
[ "$missing" -ne 0 ] || ok "every file of contents.txt is in the package"
# Read whole: `tar | grep -q` would end tar early, and pipefail fail it.
control=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -t)
conffiles=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles 2>/dev/null || true)
for path in $(grep '^/etc/' <<<"$have" | grep -v '/$'); do
    grep -qxF "$path" <<<"$conffiles" || fail "$path is not a conffile"
done
ok "files under /etc are conffiles: $(echo $conffiles)"
for script in postinst postrm; do
    grep -qx "./$script" <<<"$control" && ok "$script" || fail "no $script in the package"
done
VERSION=$(dpkg-deb -f "$DEB" Version)

# ---------------------------------------------------------------- a clean root

SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$SUITE" ] || { echo "test.sh: this host's /etc/os-release names no release" >&2; exit 2; }
# The mirror of this host's apt for that release (deb822 .sources first,
# then one-line .list files), not a security or third-party one.
mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
            END { if (uri != "" && hit) print uri }' "$f" | head -n 1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
}
MIRROR="${VIPOOL_DEB_MIRROR:-$(mirror | head -n 1)}"
[ -n "$MIRROR" ] || { echo "test.sh: no Debian mirror for $SUITE in this host's apt sources; set VIPOOL_DEB_MIRROR" >&2; exit 2; }

ROOTDIR=$(mktemp -d "${TMPDIR:-/tmp}/vipool-deb-root.XXXXXX")
cleanup() {
    local status=$?
    # Nothing is mounted in it; check before removing all the same.
    if grep -q " $ROOTDIR" /proc/mounts; then
        echo "test.sh: something is mounted under $ROOTDIR: left in place" >&2
    else
        rm -rf "$ROOTDIR"
    fi
    exit "$status"
}
trap cleanup EXIT
R="$ROOTDIR/root"

echo "== debootstrap --variant=minbase --include=systemd,procps $SUITE $R $MIRROR"
started=$SECONDS
if ! debootstrap --variant=minbase --include=systemd,procps "$SUITE" "$R" "$MIRROR" >"$ROOTDIR/debootstrap.log" 2>&1; then
    tail -n 30 "$ROOTDIR/debootstrap.log"
    echo "test.sh: debootstrap failed" >&2
    exit 1
fi
ok "a clean $SUITE root in $((SECONDS - started)) s"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "== dpkg -i $(basename "$DEB") in the root"
cp "$DEB" "$R/tmp/vipool.deb"
if ! in_root dpkg -i /tmp/vipool.deb; then
    fail "dpkg -i failed"
    exit 1
fi

echo "== the installed package"
got=$(in_root vipool --version) || fail "vipool --version failed"
[ "$got" = "vipool ${VERSION%-*}" ] && ok "vipool --version: $got" || fail "vipool --version printed '$got', the package is $VERSION"
for f in primary backup witness; do
    if out=$(in_root vipool check-config --syntax-only "/etc/vipool/$f.toml" 2>&1); then
        ok "check-config --syntax-only /etc/vipool/$f.toml"
    else
        fail "check-config refused /etc/vipool/$f.toml: $out"
    fi
done
user=$(in_root getent passwd vipool || true)
case "$user" in
    vipool:*:/var/lib/vipool:/usr/sbin/nologin) ok "user: $user" ;;
    *) fail "no system user vipool with home /var/lib/vipool and no login shell: '$user'" ;;
esac
for want in "700 vipool:vipool /var/lib/vipool" "750 root:vipool /etc/vipool/pki"; do
    got=$(in_root stat -c '%a %U:%G %n' "${want##* }" 2>&1 || true)
    [ "$got" = "$want" ] && ok "$got" || fail "wanted $want, found: $got"
done
units=(/lib/systemd/system/vipool-node.service /lib/systemd/system/vipool-witness.service)
if out=$(in_root systemd-analyze verify "${units[@]}" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify ${units[*]}"
else
    fail "systemd-analyze verify: ${out:-exit status}"
fi
for page in vipool vipool-node; do
    in_root test -s "/usr/share/man/man1/$page.1.gz" || fail "no man page $page"
done
if in_root bash -c 'source /usr/share/bash-completion/completions/vipool && complete -p vipool' >/dev/null; then
    ok "the bash completion defines one for vipool"
else
    fail "the bash completion does not define a completion for vipool"
fi

echo "== dpkg --purge vipool"
in_root dpkg --purge vipool >/dev/null || fail "dpkg --purge failed"
left=""
while read -r path; do
    case "$path" in '' | '#'*) continue ;; esac
    [ ! -e "$R$path" ] || left="$left $path"
done <"$HERE/contents.txt"
[ -z "$left" ] && ok "purged: none of its files left" || fail "left after purge:$left"

if [ "$FAILURES" -eq 0 ]; then
    echo "PASS: the package installs into a clean $SUITE root and works there"
else
    echo "FAIL: $FAILURES problem(s)"
fi
echo "deb: $PASSED passed, $FAILURES failed"
[ "$FAILURES" -eq 0 ]
