#!/usr/bin/env bash
# vipool container lab: the pair in docker containers, switches drawing
# licenses through the VIP, and `docker-compose stop primary` as the failover.
#
#   bash deploy/container/run.sh [--witness]
#
# Builds a static vipool (cargo, target x86_64-unknown-linux-gnu with
# crt-static, into its scratch directory; set VIPOOL_STATIC_TARGET_DIR=DIR
# to build into DIR instead and keep it for the next run, or
# VIPOOL_STATIC_BIN=/path to use a static binary), builds a FROM-scratch
# image around it, starts the compose
# project (primary, backup, optional witness, 10 simulated switches on
# 198.51.100.0/24, VIP 198.51.100.100), waits until the primary serves,
# stops the primary (SIGTERM), checks that the backup serves and the
# switches still draw licenses, starts the primary again and checks that it
# catches up and takes the VIP back. Ends with a PASS or FAIL line (exit 0 or
# 1). Everything it made (containers, network, volumes, image, scratch
# directory) is removed on exit, also on failure or Ctrl-C.
set -u
set -o pipefail
export LC_ALL=C

usage() {
    # The comment block at the top, whatever its length.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}
WITNESS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --witness) WITNESS=1 ;;
        -h | --help) usage 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
for tool in docker docker-compose; do
    command -v "$tool" >/dev/null || { echo "run.sh: needs $tool" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "run.sh: the docker daemon does not answer (root or the docker group?)" >&2; exit 2; }

PROJECT="vipool-ctr-$$"
IMAGE="$PROJECT:latest"
PRIMARY=198.51.100.11
BACKUP=198.51.100.12
VIP=198.51.100.100
OPS=4334
SWITCHES=10
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vipool-ctr.XXXXXX")"
FAILURES=()
START=$EPOCHREALTIME
UP=0
IMAGE_BUILT=0

export VIPOOL_IMAGE="$IMAGE"
export VIPOOL_CONFIGS=pair
PROFILE=()
if [ "$WITNESS" -eq 1 ]; then
    VIPOOL_CONFIGS=with-witness
    PROFILE=(--profile witness)
fi

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 + 0.5 }'; }
say() { printf '[%6.2fs] %s\n' "$(elapsed "$START")" "$*"; }
fail() {
    FAILURES+=("$*")
    say "FAILED: $*"
}

compose() {
    docker-compose -p "$PROJECT" -f "$HERE/docker-compose.yml" --project-directory "$HERE" "${PROFILE[@]}" "$@"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$UP" -eq 1 ]; then
        say "cleanup: docker-compose down -v (containers, network, volumes of $PROJECT)"
        compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
    fi
    # Whatever compose left behind, by its project label.
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
    ids=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1
    ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -z "$ids" ] || docker volume rm $ids >/dev/null 2>&1
    if [ "$IMAGE_BUILT" -eq 1 ]; then
        docker rmi -f "$IMAGE" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT
trap 'echo "run.sh: terminated" >&2; exit 143' TERM

finish() {
    if [ "${#FAILURES[@]}" -eq 0 ]; then
        echo "PASS: the backup took over when the primary was stopped, the switches kept drawing licenses through the VIP, the primary came back"
        exit 0
    fi
    for f in "${FAILURES[@]}"; do
        echo "  failure: $f"
    done
    if [ "$UP" -eq 1 ]; then
        echo "  the containers' last log lines:"
        compose logs --no-color --tail 20 2>&1 | sed 's/^/    /'
    fi
    echo "FAIL: ${#FAILURES[@]} problem(s)"
    exit 1
}

# ---------------------------------------------------------------- binary

if [ -n "${VIPOOL_STATIC_BIN:-}" ]; then
    BIN="$VIPOOL_STATIC_BIN"
else
    # In the scratch directory unless told otherwise: the help promises
    # that everything the run made is removed (a static build is ~800 MB).
    TARGET_DIR="${VIPOOL_STATIC_TARGET_DIR:-$WORK/target}"
    say "building a static binary: cargo build --release --bin vipool --target x86_64-unknown-linux-gnu (crt-static) into $TARGET_DIR"
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --bin vipool \
        --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR") || { fail "cargo build failed"; finish; }
    BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release/vipool"
fi
[ -x "$BIN" ] || { fail "$BIN is not an executable"; finish; }
# FROM scratch has no libc: a dynamically linked binary would not start.
if command -v file >/dev/null && ! file -L "$BIN" | grep -q 'statically linked\|static-pie linked'; then
    fail "$BIN is not statically linked (build it with RUSTFLAGS=\"-C target-feature=+crt-static\")"
    finish
fi
for f in "$HERE/$VIPOOL_CONFIGS"/*.toml; do
    "$BIN" check-config --syntax-only "$f" >/dev/null || { fail "$f refused by check-config"; finish; }
done
say "configs ok (vipool check-config): $(cd "$HERE/$VIPOOL_CONFIGS" && echo *.toml | sed 's/ /, /g') in deploy/container/$VIPOOL_CONFIGS"

# ---------------------------------------------------------------- pki

# The pair's CA and one certificate per member, mounted read-only as
# /etc/vipool/pki where the configurations expect them.
export VIPOOL_PKI="$WORK/pki"
"$BIN" pki init --dir "$VIPOOL_PKI" --cluster-id 7 >/dev/null || { fail "vipool pki init failed"; finish; }
for m in primary backup; do
    "$BIN" pki member --dir "$VIPOOL_PKI" --name "$m" >/dev/null || { fail "vipool pki member $m failed"; finish; }
done
if [ "$WITNESS" -eq 1 ]; then
    "$BIN" pki member --dir "$VIPOOL_PKI" --name witness --witness >/dev/null || { fail "vipool pki member witness failed"; finish; }
fi
# The operator of `show` (run in the switches' container), and the
# simulated switches' certificates come from the CA directory itself
# (`vipool client --pki`): a simulation shortcut, a real switch gets its own.
"$BIN" pki operator --dir "$VIPOOL_PKI" --name lab-operator >/dev/null || { fail "vipool pki operator failed"; finish; }
say "pki: the pair's CA and member certificates in $VIPOOL_PKI (vipool pki)"

# ---------------------------------------------------------------- license keys

# The lab issuer and each server's keys bound to its serial (node.serial
# in the configurations), mounted read-only as /etc/vipool/license: a
# server holds licenses only through keys an issuer it trusts signed. The
# issuer's secret key stays here, off the servers.
export VIPOOL_LICENSE="$WORK/license"
"$BIN" license keygen --name lab --out "$WORK/issuer" >/dev/null || { fail "vipool license keygen failed"; finish; }
mkdir -p "$VIPOOL_LICENSE"
cp "$WORK/issuer/lab.pub" "$VIPOOL_LICENSE/lab.pub"
for m in primary:CTR-PRIMARY backup:CTR-BACKUP; do
    for tc in AP:64 PEFNG:16 XSEC:16; do
        "$BIN" license issue --issuer "$WORK/issuer/lab.key" --serial "${m#*:}" \
            --type "${tc%%:*}" --count "${tc##*:}" --key-id "${m%%:*}-${tc%%:*}" 2>/dev/null ||
            { fail "vipool license issue for ${m%%:*} failed"; finish; }
    done >"$VIPOOL_LICENSE/${m%%:*}.keys"
done
# Readable by the containers' user whatever this host's umask.
chmod 0755 "$VIPOOL_LICENSE" && chmod 0644 "$VIPOOL_LICENSE"/*
say "license: issuer lab and the servers' keys (64 AP, 16 PEFNG, 16 XSEC each) in $VIPOOL_LICENSE (vipool license)"

# ---------------------------------------------------------------- image

mkdir "$WORK/context"
cp "$HERE/Dockerfile" "$WORK/context/Dockerfile"
cp "$BIN" "$WORK/context/vipool"
strip "$WORK/context/vipool" 2>/dev/null || true
IMAGE_BUILT=1
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log"; fail "docker build failed"; finish; }
say "image $IMAGE: FROM scratch + vipool ($(du -h "$WORK/context/vipool" | cut -f1) stripped)"

# ---------------------------------------------------------------- up

say "project $PROJECT: network 198.51.100.0/24, primary $PRIMARY, backup $BACKUP$([ "$WITNESS" -eq 1 ] && echo ", witness 198.51.100.13"), switches 198.51.100.20, VIP $VIP"
UP=1
# A brand-new pair: each member's raft log is created once, in its volume,
# before its first start (a node refuses to start without one).
INIT=(primary:node.toml backup:node.toml)
[ "$WITNESS" -eq 1 ] && INIT+=(witness:witness.toml)
for m in "${INIT[@]}"; do
    compose run --rm --no-deps -T "${m%%:*}" --log warn init --config "/etc/vipool/${m#*:}" >>"$WORK/init.log" 2>&1 ||
        { cat "$WORK/init.log"; fail "vipool init of ${m%%:*} failed"; finish; }
done
say "raft logs created (vipool init): ${INIT[*]%%:*}"
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "docker-compose up failed"; finish; }

# `vipool show` from the switches' container (the image has no shell: the
# binary is exec'ed directly).
show() { # view server... [--json]
    local view=$1
    shift
    compose exec -T switches /vipool show "$view" "$@" --ca /etc/vipool/pki/ca.crt --cert /etc/vipool/pki/lab-operator.crt 2>/dev/null
}
field() { # address field
    show status --json --server "$1:$OPS" | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -n 1
}
serving() { [ "$(field "$1" serving)" = true ]; }
settled_backup() { [ "$(field "$1" raft_role)" = Follower ] && [ "$(field "$1" vrrp_state)" = Backup ]; }
# wait_until SECONDS COMMAND...
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
# AP licenses used per client in a server's table: "CLIENT USED" lines.
ap_usage() { # address
    show license-usage --json --server "$1:$OPS" |
        awk '/"client":/ { split($0, a, "\""); c = a[4] } /"license_type":/ { split($0, a, "\""); t = a[4] }
            /"used":/ { gsub(/[^0-9]/, ""); if (t == "AP") print c, $0 }'
}
ap_used() { ap_usage "$1" | awk '{ s += $2 } END { print s + 0 }'; }
switch_events() { compose logs --no-color switches 2>/dev/null | grep -o '{"event":"[a-z_]*".*'; }
registrations() { switch_events | grep -c '"event":"registered"'; }
all_granted() { [ "$(ap_used "$1")" -ge $((SWITCHES * 2)) ]; }

wait_until 60 serving "$PRIMARY" || { fail "the primary never served"; finish; }
wait_until 30 settled_backup "$BACKUP" || fail "the backup never settled as VRRP backup and raft follower"
say "primary serves on the VIP (VRRP master, raft leader)"
wait_until 60 all_granted "$PRIMARY" || { fail "the switches did not get their $((SWITCHES * 2)) AP licenses"; finish; }
say "$SWITCHES switches registered through $VIP:4333, $(ap_used "$PRIMARY") AP licenses used"
echo
echo "== vipool show status --server $PRIMARY:$OPS --server $BACKUP:$OPS"
show status --server "$PRIMARY:$OPS" --server "$BACKUP:$OPS"
echo "== vipool show summary --server $PRIMARY:$OPS"
show summary --server "$PRIMARY:$OPS"
echo

# ---------------------------------------------------------------- failover

echo "== failover: docker-compose stop primary (SIGTERM to the VIP holder)"
REG_BEFORE=$(registrations)
t0=$EPOCHREALTIME
compose stop primary >"$WORK/stop.log" 2>&1 || fail "docker-compose stop primary failed: $(cat "$WORK/stop.log")"
stop_ms=$(ms_since "$t0")
rc=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q primary)" 2>/dev/null)
if [ "$rc" = 0 ]; then
    say "the primary exited 0, docker-compose stop returned after $stop_ms ms"
else
    fail "the primary exited with status ${rc:-?} on SIGTERM"
fi
wait_until 30 serving "$BACKUP" || { fail "the backup never served"; finish; }
say "the backup serves on the VIP (seen $(ms_since "$t0") ms after the stop began, docker-compose exec polling included)"
# The nodes' own log times: the primary's SIGTERM, the backup's takeover.
log_at() { # service text: the time (epoch s) of its last log line with text
    local ts
    ts=$(compose logs --no-color "$1" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -F "$2" | tail -n 1 |
        sed -n 's/^[^|]*| *\([0-9TZ:.-]*\) .*/\1/p')
    [ -n "$ts" ] && date -d "$ts" +%s.%N
}
t_sig=$(log_at primary 'stopping signal=')
t_master=$(log_at backup 'to=Master')
t_serve=$(log_at backup 'serving: VRRP master and raft leader')
if [ -n "$t_sig" ] && [ -n "$t_master" ] && [ -n "$t_serve" ]; then
    say "from the logs: SIGTERM at the primary -> backup VRRP master $(awk -v a="$t_sig" -v b="$t_master" 'BEGIN { printf "%d", (b - a) * 1000 }') ms, serving $(awk -v a="$t_sig" -v b="$t_serve" 'BEGIN { printf "%d", (b - a) * 1000 }') ms (last serving line)"
fi
back_all() { [ "$(registrations)" -ge $((REG_BEFORE + SWITCHES)) ]; }
if wait_until 30 back_all; then
    say "switches re-registered through the VIP: $(( $(registrations) - REG_BEFORE )) registrations since the stop ($SWITCHES switches)"
else
    fail "only $(( $(registrations) - REG_BEFORE )) of $SWITCHES switches re-registered after the failover"
fi
# A switch that comes up now draws from the backup.
compose exec -T switches /vipool client --pki /etc/vipool/pki --server "$VIP:4333" --id after-failover --aps 1 \
    --heartbeat-interval-ms 1000 --for-s 2 --json >"$WORK/drawer.events" 2>/dev/null
if grep -q '"event":"granted".*"license_type":"AP"' "$WORK/drawer.events"; then
    say "a new switch (after-failover) drew an AP license through the VIP from the backup"
else
    fail "a new switch got no AP license through the VIP after the failover"
fi
used=$(ap_used "$BACKUP")
if [ "$used" -ge $((SWITCHES * 2 + 1)) ]; then
    say "backup's table: $used AP licenses used ($SWITCHES switches x 2 + 1), nothing lost"
else
    fail "backup's table has $used AP licenses used, expected at least $((SWITCHES * 2 + 1))"
fi
[ -n "$(compose ps -q switches)" ] && [ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q switches)")" = true ] ||
    fail "the switches' container is not running"
echo
echo "== vipool show status --server $BACKUP:$OPS (the primary is stopped)"
show status --server "$BACKUP:$OPS"
echo "== vipool show summary --server $BACKUP:$OPS"
show summary --server "$BACKUP:$OPS"
echo "== vipool show license-usage --server $BACKUP:$OPS"
show license-usage --server "$BACKUP:$OPS"
echo

# ---------------------------------------------------------------- return

echo "== docker-compose start primary: it catches up, then takes the VIP back (preempt)"
t1=$EPOCHREALTIME
compose start primary >"$WORK/start.log" 2>&1 || fail "docker-compose start primary failed: $(cat "$WORK/start.log")"
if wait_until 60 serving "$PRIMARY"; then
    say "the primary serves again $(ms_since "$t1") ms after its start"
else
    fail "the primary did not take the VIP back within 60 s"
fi
wait_until 30 settled_backup "$BACKUP" || fail "the backup did not return to VRRP backup and raft follower"
# Both applied indexes from one `show status` (the switches' heartbeats keep
# the log moving, so two separate asks would rarely agree).
applied_pair() {
    show status --json --server "$PRIMARY:$OPS" --server "$BACKUP:$OPS" |
        sed -n 's/^ *"applied_index": \([0-9]*\),\{0,1\}$/\1/p' | tr '\n' ' '
}
synced() {
    local a b
    read -r a b < <(applied_pair)
    [ -n "$a" ] && [ "$a" = "${b:-}" ]
}
wait_until 30 synced || fail "the tables did not converge (applied index primary/backup: $(applied_pair))"
ap_usage "$PRIMARY" | sort >"$WORK/usage.primary"
ap_usage "$BACKUP" | sort >"$WORK/usage.backup"
if cmp -s "$WORK/usage.primary" "$WORK/usage.backup" && [ -s "$WORK/usage.primary" ]; then
    say "both tables identical: $(ap_used "$PRIMARY") AP licenses used by $(wc -l <"$WORK/usage.primary") clients"
else
    fail "the two tables differ (AP used: primary $(ap_used "$PRIMARY"), backup $(ap_used "$BACKUP"))"
fi
echo
echo "== vipool show status --server $PRIMARY:$OPS --server $BACKUP:$OPS"
show status --server "$PRIMARY:$OPS" --server "$BACKUP:$OPS"
echo
finish
