#!/usr/bin/env bash
# vipool lab demo: a license server pair on one Linux machine.
#
#   deploy/lab.sh [--witness] [--switches N] [--advert-ms N] [--keep] [--bin PATH]
#
# Run it as root, or as a user who may use sudo: it then builds as that
# user and runs the lab itself under sudo (`sudo deploy/lab.sh` works too;
# it builds as the user who ran sudo, with that user's cargo).
# Needs Rust >= 1.88 (rustup), a C linker (build-essential) and iproute2.
# Builds vipool (cargo build --release; --bin PATH or VIPOOL_BIN=PATH uses
# a built binary instead), makes a broadcast domain of network namespaces (a
# "switch" namespace holding a bridge; primary, backup, optional witness and
# one host running the simulated switches), starts the pair and runs two
# rounds while the switches keep drawing licenses through the VIP:
#   round 1: the primary is stopped gracefully (SIGTERM);
#   round 2: after the old primary is back and caught up, the VIP holder is
#            killed (SIGKILL, and its bridge port cut, like a power loss).
# It prints what happened with timings and ends with a PASS or FAIL line.
# Everything it made (namespaces, processes, files) is removed on exit,
# also on failure or Ctrl-C. Addresses: 192.0.2.0/24 (TEST-NET-1), only
# inside its own namespaces; names carry a per-run prefix.
set -u
set -o pipefail
export LC_ALL=C

usage() {
    # The comment block at the top, whatever its length.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}

ARGS=("$@")
WITNESS=0
SWITCHES=20
ADVERT_MS=100
KEEP=0
BIN="${VIPOOL_BIN:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --witness) WITNESS=1 ;;
        --switches) SWITCHES="${2:-}"; shift ;;
        --switches=*) SWITCHES="${1#*=}" ;;
        --advert-ms) ADVERT_MS="${2:-}"; shift ;;
        --advert-ms=*) ADVERT_MS="${1#*=}" ;;
        --keep) KEEP=1 ;;
        --bin) BIN="${2:-}"; shift ;;
        --bin=*) BIN="${1#*=}" ;;
        -h | --help) usage 0 ;;
        *) echo "lab.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
case "$SWITCHES" in '' | *[!0-9]*) echo "lab.sh: --switches needs a number" >&2; exit 2 ;; esac
case "$ADVERT_MS" in '' | *[!0-9]*) echo "lab.sh: --advert-ms needs a number" >&2; exit 2 ;; esac
if [ "$SWITCHES" -lt 1 ] || [ "$SWITCHES" -gt 5000 ]; then
    echo "lab.sh: --switches must be 1-5000" >&2; exit 2
fi
if [ "$ADVERT_MS" -lt 50 ] || [ "$ADVERT_MS" -gt 40950 ] || [ $((ADVERT_MS % 10)) -ne 0 ]; then
    echo "lab.sh: --advert-ms must be a multiple of 10 from 50 to 40950" >&2; exit 2
fi

if ! ip -V >/dev/null 2>&1; then
    echo "lab.sh: needs the ip command: apt-get install iproute2" >&2
    exit 2
fi

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

# ---------------------------------------------------------------- build

# cargo where rustup puts it, also when it is not on PATH (sudo's PATH
# never has ~/.cargo/bin). $1: the home of the user who builds.
find_cargo() {
    local c
    for c in "$1/.cargo/bin/cargo" "$(command -v cargo 2>/dev/null)"; do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

# Builds the release binary and sets BIN. Under sudo it builds as the user
# who ran sudo: with that user's toolchain, and without leaving files
# owned by root in that user's target/.
build() {
    local as=() who home cargo
    who=$(id -un)
    home=$HOME
    if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        who=$SUDO_USER
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        as=(sudo -u "$SUDO_USER" -H --)
    fi
    if ! cargo=$(find_cargo "$home"); then
        echo "lab.sh: no cargo for $who (not on PATH, not in $home/.cargo/bin)." >&2
        echo "  Install Rust >= 1.88 as $who with rustup (see https://rustup.rs; Debian's rustc is too old)" >&2
        echo "  and a C linker (apt-get install build-essential), or pass a built binary: --bin PATH" >&2
        exit 1
    fi
    echo "lab.sh: building as $who: $cargo build --release --bin vipool"
    (cd "$ROOT" && "${as[@]}" "$cargo" build --release --bin vipool) ||
        { echo "lab.sh: build failed (see cargo's errors above)" >&2; exit 1; }
    BIN="$ROOT/target/release/vipool"
}

if [ "$(id -u)" -ne 0 ]; then
    # Network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN: build as
    # this user, then run the lab under sudo.
    if ! command -v sudo >/dev/null; then
        echo "lab.sh: needs root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN), and sudo is not installed: run it as root" >&2
        exit 2
    fi
    [ -n "$BIN" ] || build
    echo "lab.sh: the lab itself needs root: continuing under sudo"
    exec sudo -- bash "$0" "${ARGS[@]}" --bin "$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
fi

# ---------------------------------------------------------------- names

PFX="vlab$$x$((RANDOM % 1000))"
NS_SW="${PFX}sw"
NS_A="${PFX}a"
NS_B="${PFX}b"
NS_W="${PFX}w"
NS_C="${PFX}c"
ADDR_A=192.0.2.11
ADDR_B=192.0.2.12
ADDR_W=192.0.2.13
ADDR_C=192.0.2.20
VIP=192.0.2.100
CLIENT_PORT=4333
OPERATOR_PORT=4334
RAFT_PORT=4335
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vipool-lab.XXXXXX")"
NAMESPACES=()
FAILURES=()
START=$EPOCHREALTIME

say() { printf '[%6.2fs] %s\n' "$(elapsed "$START")" "$*"; }
fail() {
    FAILURES+=("$*")
    say "FAILED: $*"
}

# Seconds since $1 (both $EPOCHREALTIME values), with milliseconds.
elapsed() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}
# Milliseconds from $1 to $2 (seconds with a fraction).
ms_between() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 + 0.5 }'
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$KEEP" -eq 1 ] && [ -t 0 ]; then
        echo
        echo "--keep: the lab is still up. Namespaces: ${NAMESPACES[*]}"
        echo "  e.g. ip netns exec $NS_C $BIN show status --server $ADDR_A:$OPERATOR_PORT --server $ADDR_B:$OPERATOR_PORT --ca $WORK/pki/ca.crt --cert $WORK/pki/lab-operator.crt"
        echo "  logs and configs in $WORK"
        read -r -p "press Enter to remove everything " _ || true
    fi
    # The shell's "Killed" notices for our own jobs are noise.
    exec 2>/dev/null
    touch "$WORK/draw.stop"
    # First what this script started, then anything left in its namespaces
    # (the simulated switches' processes, say).
    # Only live (or not yet reaped) children of this shell: a reaped pid
    # could belong to someone else by now.
    local pid
    for pid in $(jobs -p); do
        kill -KILL "$pid" 2>/dev/null
    done
    local ns
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
    done
    wait 2>/dev/null
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "lab.sh: interrupted" >&2; exit 130' INT
trap 'echo "lab.sh: terminated" >&2; exit 143' TERM

# ---------------------------------------------------------------- binary

[ -n "$BIN" ] || build
if [ ! -x "$BIN" ]; then
    echo "lab.sh: $BIN is not an executable" >&2
    exit 1
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# ---------------------------------------------------------------- network

add_ns() {
    ip netns add "$1" || exit 1
    NAMESPACES+=("$1")
    ip -n "$1" link set lo up || exit 1
}

# Host $1 gets eth0 with $2/24 on the bridge, through port $3. Both veth ends
# are created inside our namespaces: the root namespace is never touched.
add_host() {
    add_ns "$1"
    ip -n "$NS_SW" link add "$3" type veth peer name eth0 netns "$1" || exit 1
    ip -n "$NS_SW" link set "$3" master br0 up || exit 1
    ip -n "$1" addr add "$2/24" dev eth0 || exit 1
    ip -n "$1" link set eth0 up || exit 1
}

say "lab $PFX: bridge in $NS_SW; primary $ADDR_A, backup $ADDR_B$([ "$WITNESS" -eq 1 ] && echo ", witness $ADDR_W"), switches' host $ADDR_C, VIP $VIP"
add_ns "$NS_SW"
ip -n "$NS_SW" link add br0 type bridge mcast_snooping 0 || exit 1
ip -n "$NS_SW" link set br0 up || exit 1
add_host "$NS_A" "$ADDR_A" pa
add_host "$NS_B" "$ADDR_B" pb
[ "$WITNESS" -eq 1 ] && add_host "$NS_W" "$ADDR_W" pw
add_host "$NS_C" "$ADDR_C" pc

# ---------------------------------------------------------------- configs

PEERS="{ id = 1, name = \"primary\", address = \"$ADDR_A:$RAFT_PORT\", role = \"server\" },
    { id = 2, name = \"backup\", address = \"$ADDR_B:$RAFT_PORT\", role = \"server\" },"
if [ "$WITNESS" -eq 1 ]; then
    PEERS="$PEERS
    { id = 3, name = \"witness\", address = \"$ADDR_W:$RAFT_PORT\", role = \"witness\" },"
fi
# Lab timers: VRRP adverts every --advert-ms; a raft tick of a tenth of
# that, so that two election timeouts (2 x 10 ticks = 2 adverts) stay below
# VRRP's Master_Down_Interval (3 adverts + skew): an isolated former leader
# steps down before the other node can take the VIP (check-config insists).
# The server expects heartbeats every 60 s, so a switch that ends keeps its
# grants in the table for the whole demo.
TICK_MS=$((ADVERT_MS / 10))
CLUSTER="[cluster]
peers = [
    $PEERS
]
tick_ms = $TICK_MS
election_ticks = 10
heartbeat_ticks = 2
request_timeout_ms = $((ADVERT_MS * 20 > 2000 ? ADVERT_MS * 20 : 2000))"

# The pair's own CA and a certificate per member, as an operator makes
# them: the cluster link is mutual TLS, there is no way around it.
"$BIN" pki init --dir "$WORK/pki" --cluster-id 7 >/dev/null || { echo "lab.sh: vipool pki init failed" >&2; exit 1; }
for m in primary backup; do
    "$BIN" pki member --dir "$WORK/pki" --name "$m" >/dev/null || { echo "lab.sh: vipool pki member $m failed" >&2; exit 1; }
done
if [ "$WITNESS" -eq 1 ]; then
    "$BIN" pki member --dir "$WORK/pki" --name witness --witness >/dev/null || { echo "lab.sh: vipool pki member witness failed" >&2; exit 1; }
fi
# The lab's operator (for `vipool show`); the simulated switches get their
# certificates from the CA directory itself (`vipool client --pki`).
"$BIN" pki operator --dir "$WORK/pki" --name lab-operator >/dev/null || { echo "lab.sh: vipool pki operator failed" >&2; exit 1; }
tls_section() { # name
    printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' "$WORK/pki/ca.crt" "$WORK/pki/$1.crt" "$WORK/pki/$1.key"
}

# The license issuer and each server's keys, as an operator makes them:
# only keys signed by an issuer the servers trust, bound to the server's
# serial, count (a server has no other way to hold licenses).
"$BIN" license keygen --name lab --out "$WORK/issuers" >/dev/null || { echo "lab.sh: vipool license keygen failed" >&2; exit 1; }
mkdir -p "$WORK/keys"
for m in primary backup; do
    for tc in AP:100000 PEFNG:16 XSEC:16; do
        "$BIN" license issue --issuer "$WORK/issuers/lab.key" --serial "LAB-$m" \
            --type "${tc%%:*}" --count "${tc##*:}" --key-id "$m-${tc%%:*}" 2>/dev/null ||
            { echo "lab.sh: vipool license issue for $m failed" >&2; exit 1; }
    done >"$WORK/keys/$m.keys"
done

node_config() { # name id priority address
    cat >"$WORK/$1.toml" <<EOF
# vipool lab: $1 (written by deploy/lab.sh)
[node]
name = "$1"
id = $2
cluster_id = 7
serial = "LAB-$1"
data_dir = "$WORK/$1-data"

[vrrp]
interface = "eth0"
vrid = 51
priority = $3
vips = ["$VIP/24"]
advert_interval_ms = $ADVERT_MS
source = "$4"
pair_handoff = true
vmac = true

$CLUSTER

[license]
client_port = $CLIENT_PORT
operator_listen = "$4:$OPERATOR_PORT"
issuers = ["$WORK/issuers/lab.pub"]
key_files = ["$WORK/keys/$1.keys"]
# Every simulated switch and drawer runs from one host here.
max_clients_per_source = 100000
registrations_per_s_per_source = 100000
heartbeat_interval_ms = 60000
sweep_interval_ms = 1000

$(tls_section "$1")
EOF
}
node_config primary 1 200 "$ADDR_A"
node_config backup 2 100 "$ADDR_B"
if [ "$WITNESS" -eq 1 ]; then
    cat >"$WORK/witness.toml" <<EOF
# vipool lab: witness (written by deploy/lab.sh)
[node]
name = "witness"
id = 3
cluster_id = 7
data_dir = "$WORK/witness-data"

$CLUSTER

$(tls_section witness)
EOF
fi
for f in "$WORK"/*.toml; do
    "$BIN" check-config "$f" >/dev/null || { echo "lab.sh: $f refused by check-config" >&2; exit 1; }
done
# A brand-new pair: each member's raft log is created once, before its
# first start (a node refuses to start without one).
for f in "$WORK"/*.toml; do
    "$BIN" --log warn init --config "$f" >>"$WORK/init.log" 2>&1 ||
        { cat "$WORK/init.log" >&2; echo "lab.sh: vipool init --config $f failed" >&2; exit 1; }
done

# ---------------------------------------------------------------- processes

export RUST_LOG="${RUST_LOG:-warn,vipool=info,cluster=info}"

# start_node NAME NS COMMAND: runs `vipool COMMAND --config NAME.toml` in NS,
# log appended to NAME.log; sets LAST_PID.
start_node() {
    ip netns exec "$2" "$BIN" "$3" --config "$WORK/$1.toml" >>"$WORK/$1.log" 2>&1 &
    LAST_PID=$!
}

# Prefixes each line with the time it was read (seconds since the epoch).
stamp() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done
}

show() { # view server... (extra args to vipool show)
    local view=$1
    shift
    ip netns exec "$NS_C" timeout 5 "$BIN" show "$view" "$@" --ca "$WORK/pki/ca.crt" --cert "$WORK/pki/lab-operator.crt" 2>/dev/null
}
serving() { # address
    local status
    status=$(show status --json --server "$1:$OPERATOR_PORT") || return 1
    case "$status" in *'"serving": true'*) return 0 ;; *) return 1 ;; esac
}
node_field() { # address field
    show status --json --server "$1:$OPERATOR_PORT" | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p"
}
# wait_until SECONDS COMMAND...: polls every 20 ms.
wait_until() {
    local deadline
    deadline=$(awk -v n="$EPOCHREALTIME" -v s="$1" 'BEGIN { printf "%.3f", n + s }')
    shift
    while ! "$@"; do
        if awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n > d) }'; then
            return 1
        fi
        sleep 0.02
    done
}

# Whether our child $1 has exited (gone, or a zombie not yet reaped).
has_exited() {
    local pid comm state
    read -r pid comm state _ 2>/dev/null </proc/"$1"/stat || return 0
    [ "$state" = Z ]
}

# The timestamp (epoch seconds) of the first line of log $1 after epoch $2
# that contains $3.
log_time() {
    local line ts t
    while IFS= read -r line; do
        case "$line" in *"$3"*) ;; *) continue ;; esac
        ts=${line%% *}
        t=$(date -d "$ts" +%s.%N 2>/dev/null) || continue
        if awk -v t="$t" -v a="$2" 'BEGIN { exit !(t >= a) }'; then
            echo "$t"
            return 0
        fi
    done < <(sed 's/\x1b\[[0-9;]*m//g' "$1")
    return 1
}

say "starting the pair$([ "$WITNESS" -eq 1 ] && echo " and the witness") (VRRP advert ${ADVERT_MS} ms, raft tick ${TICK_MS} ms)"
if [ "$WITNESS" -eq 1 ]; then
    start_node witness "$NS_W" witness
fi
start_node primary "$NS_A" node
PID_A=$LAST_PID
start_node backup "$NS_B" node
PID_B=$LAST_PID

wait_until 30 serving "$ADDR_A" || { fail "the primary never served"; exit 1; }
backup_settled() {
    [ "$(node_field "$ADDR_B" raft_role)" = Follower ] && [ "$(node_field "$ADDR_B" vrrp_state)" = Backup ]
}
wait_until 30 backup_settled || { fail "the backup never settled as VRRP backup and raft follower"; exit 1; }
say "primary serves on the VIP (VRRP master, raft leader); backup is VRRP backup, raft follower"

# The simulated switches: each has 2 APs up and draws 2 AP licenses from the
# pool; heartbeat every 500 ms.
mkfifo "$WORK/switches.fifo" "$WORK/drawers.fifo"
stamp <"$WORK/switches.fifo" >"$WORK/switches.events" &
ip netns exec "$NS_C" "$BIN" client --pki "$WORK/pki" --server "$VIP:$CLIENT_PORT" --id sw --count "$SWITCHES" \
    --aps 2 --heartbeat-interval-ms 500 --json >"$WORK/switches.fifo" 2>"$WORK/switches.log" &
PID_SWITCHES=$!
# One reader for every drawer, kept open by this script between rounds.
stamp <"$WORK/drawers.fifo" >"$WORK/drawers.events" &
exec 7>"$WORK/drawers.fifo"

# Events: "TIME {json}". Prints "ID COUNT" for every grant (released: negative).
grants_of() {
    sed -n 's/^\([0-9.]*\) {"event":"\(granted\|released\)","id":"\([^"]*\)","license_type":"AP","count":\([0-9]*\)}$/\2 \3 \4/p' "$@" |
        awk '{ n[$2] += ($1 == "granted" ? $3 : -$3) } END { for (id in n) print id, n[id] }'
}
switches_granted() {
    [ "$(grants_of "$WORK/switches.events" | awk '$2 == 2' | wc -l)" -eq "$SWITCHES" ]
}
# Distinct switches that registered after epoch $1.
registered_after() {
    awk -v t="$1" '$1 > t && /"event":"registered"/ { split($0, a, "\"id\":\""); split(a[2], b, "\""); ids[b[1]] = 1 }
        END { n = 0; for (i in ids) n++; print n }' "$WORK/switches.events"
}
all_back_after() { [ "$(registered_after "$1")" -eq "$SWITCHES" ]; }

wait_until 60 switches_granted || { fail "not every switch got its 2 AP licenses"; exit 1; }
say "$SWITCHES switches registered through $VIP:$CLIENT_PORT, 2 AP licenses each"
echo
echo "== vipool show summary --server $ADDR_A:$OPERATOR_PORT"
show summary --server "$ADDR_A:$OPERATOR_PORT"
echo "== vipool show status --server $ADDR_A:$OPERATOR_PORT --server $ADDR_B:$OPERATOR_PORT"
show status --server "$ADDR_A:$OPERATOR_PORT" --server "$ADDR_B:$OPERATOR_PORT"
echo
# The seed's example: 16 PEFNG and 16 XSEC keys signed for each server
# (above, `vipool license issue`) give a pool of 32 of each; the servers
# count nothing else of these types. The backup installs its keys once it
# has joined, through the log: give it a few seconds.
pool_of() { # type: its total in the primary's pool
    show server-table --json --server "$ADDR_A:$OPERATOR_PORT" |
        awk -v want="$1" '/"license_type":/ { split($0, a, "\""); ty = a[4] }
            /"total":/ { gsub(/[^0-9]/, ""); if (ty == want) print $0 }' | head -n 1
}
seed_pool() { [ "$(pool_of PEFNG)" = 32 ] && [ "$(pool_of XSEC)" = 32 ]; }
if ! wait_until 10 seed_pool; then
    fail "the pool holds $(pool_of PEFNG) PEFNG and $(pool_of XSEC) XSEC, expected 32 of each (16 signed for each server)"
    exit 1
fi
say "the seed's example: 16 PEFNG + 16 XSEC keys signed for each server give a pool of 32 of each"

# ---------------------------------------------------------------- load

# The drawers: a new switch every 100 ms that comes up with one AP, draws one
# AP license through the VIP and runs for 2 s; so grants keep flowing while
# the VIP moves.
DRAWN=0
start_drawing() {
    rm -f "$WORK/draw.stop"
    (
        trap - EXIT INT TERM
        k=$DRAWN
        while [ ! -e "$WORK/draw.stop" ]; do
            k=$((k + 1))
            ip netns exec "$NS_C" "$BIN" client --pki "$WORK/pki" --server "$VIP:$CLIENT_PORT" --id "$(printf 'draw-%05d' "$k")" \
                --aps 1 --heartbeat-interval-ms 500 --for-s 2 --json 2>>"$WORK/drawers.log" &
            sleep 0.1
        done
        echo "$k" >"$WORK/drawn"
        wait
    ) >&7 &
    DRAWER=$!
}
stop_drawing() {
    touch "$WORK/draw.stop"
    wait "$DRAWER" 2>/dev/null
    DRAWN=$(cat "$WORK/drawn" 2>/dev/null || echo "$DRAWN")
}

# Drawers' grant times (epoch seconds), sorted.
grant_times() {
    sed -n 's/^\([0-9.]*\) {"event":"granted".*/\1/p' "$WORK/drawers.events" | sort -n
}
# The longest time between two acknowledged grants that spans epoch $1:
# from the last grant before $1 to the first one after, in ms.
grant_gap() {
    grant_times | awk -v t="$1" '$1 <= t { last = $1 } $1 > t && !done { if (last != "") printf "%d", ($1 - last) * 1000 + 0.5; done = 1 }'
}
# Per switch: time from its disconnection after epoch $1 to its next
# registration, in ms; prints "median max count".
reconnect_gaps() {
    awk -v t="$1" '$1 > t {
            split($0, a, "\"id\":\""); split(a[2], b, "\""); id = b[1]
            if ($0 ~ /"event":"disconnected"/ && !(id in down)) down[id] = $1
            else if ($0 ~ /"event":"registered"/ && (id in down) && !(id in gap)) gap[id] = ($1 - down[id]) * 1000
        }
        END { n = 0; for (id in gap) v[++n] = gap[id]
            if (n == 0) { print "- - 0"; exit }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
            printf "%d %d %d\n", v[int((n + 1) / 2)] + 0.5, v[n] + 0.5, n }' "$WORK/switches.events"
}

# Acknowledged AP grants per client (switches and drawers) against the
# survivor's table; prints the comparison, fails on a lost grant.
ACKED=0
IN_TABLE=0
check_grants() { # survivor address, label
    grants_of "$WORK/switches.events" "$WORK/drawers.events" | sort >"$WORK/acked"
    show license-usage --json --server "$1:$OPERATOR_PORT" >"$WORK/usage.json" || {
        fail "$2: the survivor's table could not be read"
        return
    }
    awk '/"client":/ { split($0, a, "\""); c = a[4] } /"license_type":/ { split($0, a, "\""); t = a[4] }
        /"used":/ { gsub(/[^0-9]/, ""); if (t == "AP") print c, $0 }' "$WORK/usage.json" | sort >"$WORK/table"
    ACKED=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/acked")
    IN_TABLE=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/table")
    local lost
    lost=$(join -a 1 -e 0 -o 0,1.2,2.2 "$WORK/acked" "$WORK/table" | awk '$2 > $3 { printf "%s(acked %d, table %d) ", $1, $2, $3 }')
    if [ -n "$lost" ]; then
        fail "$2: acknowledged grants missing from the table: $lost"
    fi
    local over
    over=$(show server-table --json --server "$1:$OPERATOR_PORT" |
        awk '/"license_type":/ { split($0, a, "\""); t = a[4] } /"total":/ { gsub(/[^0-9]/, ""); total = $0 }
            /"used":/ { gsub(/[^0-9]/, ""); if ($0 + 0 > total + 0) print t }')
    [ -z "$over" ] || fail "$2: used above total for $over"
}

# ---------------------------------------------------------------- rounds

# round N stop|kill VICTIM_NAME VICTIM_PID VICTIM_BRIDGE_PORT SURVIVOR_NAME SURVIVOR_ADDR
round() {
    local n=$1 how=$2 victim=$3 vpid=$4 vport=$5 survivor=$6 saddr=$7
    local label="round $n"
    echo "== round $n: $([ "$how" = stop ] && echo "graceful stop (SIGTERM)" || echo "crash (SIGKILL + bridge port cut)") of the $victim, the VIP holder"
    start_drawing
    sleep 1
    local t0=$EPOCHREALTIME
    if [ "$how" = stop ]; then
        kill -TERM "$vpid"
    else
        # bash prints "Killed" for a job killed by a signal when it reaps
        # it, at whatever command runs then: the whole group's stderr
        # goes to /dev/null, ip's own errors to the script's stderr.
        {
            kill -KILL "$vpid"
            ip -n "$NS_SW" link set "$vport" down 2>&3
            wait "$vpid"
        } 3>&2 2>/dev/null
    fi
    local exited=""
    if [ "$how" = stop ]; then
        local rc=0
        if wait_until 30 has_exited "$vpid"; then
            exited=$EPOCHREALTIME
            wait "$vpid" || rc=$?
            if [ "$rc" -ne 0 ]; then
                fail "$label: the $victim exited with status $rc on SIGTERM"
            fi
        else
            fail "$label: the $victim did not exit within 30 s of SIGTERM; killed"
            { kill -KILL "$vpid"; wait "$vpid"; } 2>/dev/null
        fi
    fi
    if ! wait_until 30 serving "$saddr"; then
        fail "$label: the $survivor never served"
        stop_drawing
        return
    fi
    local served_poll=$EPOCHREALTIME
    if ! wait_until 60 all_back_after "$t0"; then
        fail "$label: only $(registered_after "$t0") of $SWITCHES switches came back through the VIP"
    fi
    local back=$EPOCHREALTIME
    sleep 1.5
    stop_drawing
    local master_at serving_at vip_ms serve_ms
    master_at=$(log_time "$WORK/$survivor.log" "$t0" "to=Master")
    serving_at=$(log_time "$WORK/$survivor.log" "$t0" "serving: VRRP master and raft leader")
    vip_ms=$([ -n "$master_at" ] && ms_between "$t0" "$master_at" || echo "?")
    serve_ms=$([ -n "$serving_at" ] && ms_between "$t0" "$serving_at" || ms_between "$t0" "$served_poll")
    local gap after
    gap=$(grant_gap "$t0")
    after=$(grant_times | awk -v t="$t0" '$1 > t' | wc -l)
    read -r rmed rmax rn < <(reconnect_gaps "$t0")
    check_grants "$saddr" "$label"
    [ "$after" -gt 0 ] || fail "$label: no grant after the failure"
    if [ -n "$exited" ]; then
        say "$label: the $victim exited 0 after $(ms_between "$t0" "$exited") ms (SIGTERM: VIP and leadership handed over)"
    fi
    say "$label: VIP moved to the $survivor after ${vip_ms} ms (VRRP master); it serves after ${serve_ms} ms"
    say "$label: client-visible gap: ${gap:-?} ms between two acknowledged grants (drawers start every 100 ms)"
    say "$label: switches reconnected to the VIP: $rn of $SWITCHES, median ${rmed} ms, max ${rmax} ms from disconnect to registered (includes their reconnect backoff: 100 ms, doubling); all back after $(ms_between "$t0" "$back") ms"
    say "$label: grants: $after acknowledged after the failure; $ACKED AP licenses acknowledged in all, $IN_TABLE in the $survivor's table"
    ROUND_LINE+=("round $n ($how): VIP ${vip_ms} ms, serving ${serve_ms} ms, grant gap ${gap:-?} ms, switches back max ${rmax} ms, acked $ACKED / table $IN_TABLE")
    echo
}

ROUND_LINE=()
round 1 stop primary "$PID_A" pa backup "$ADDR_B"

# The old primary comes back: it advertises the lowest priority until its
# log has caught up, then preempts (priority 200 over 100).
echo "== the old primary restarts and catches up"
t_restart=$EPOCHREALTIME
start_node primary "$NS_A" node
PID_A=$LAST_PID
caught_up=0
if wait_until 60 serving "$ADDR_A"; then
    caught_up=1
    say "primary serving again $(ms_between "$t_restart" "$EPOCHREALTIME") ms after its restart (caught up first, then preempted)"
    if grep -q "advertising the lowest VRRP priority" "$WORK/primary.log"; then
        say "its log: behind the log, lowest VRRP priority; caught up, configured priority; then VRRP master"
    fi
    wait_until 60 all_back_after "$t_restart" || fail "the switches did not all come back after the preemption"
    HOLDER=primary; HPID=$PID_A; HPORT=pa
    OTHER=backup; OADDR=$ADDR_B
else
    say "the primary did not take the VIP back within 60 s; the backup keeps it"
    HOLDER=backup; HPID=$PID_B; HPORT=pb
    OTHER=primary; OADDR=$ADDR_A
fi
synced() {
    local x y
    x=$(node_field "$ADDR_A" applied_index)
    y=$(node_field "$ADDR_B" applied_index)
    [ -n "$x" ] && [ "$x" = "$y" ]
}
wait_until 30 synced || fail "the two tables did not converge (applied $(node_field "$ADDR_A" applied_index) / $(node_field "$ADDR_B" applied_index))"
[ "$caught_up" -eq 1 ] || fail "the restarted primary never served again"
echo "== vipool show status"
show status --server "$ADDR_A:$OPERATOR_PORT" --server "$ADDR_B:$OPERATOR_PORT"
echo

round 2 kill "$HOLDER" "$HPID" "$HPORT" "$OTHER" "$OADDR"

echo "== vipool show summary --server $OADDR:$OPERATOR_PORT (the survivor)"
show summary --server "$OADDR:$OPERATOR_PORT"
echo "== vipool show status --server $OADDR:$OPERATOR_PORT (the $HOLDER is down)"
show status --server "$OADDR:$OPERATOR_PORT"
echo
serving "$OADDR" || fail "the survivor does not serve at the end"
if ! kill -0 "$PID_SWITCHES" 2>/dev/null; then
    fail "the simulated switches' process ended"
fi
errors=$(grep -c ' ERROR ' "$WORK"/primary.log "$WORK"/backup.log 2>/dev/null | awk -F: '{ s += $2 } END { print s + 0 }')
[ "$errors" -eq 0 ] || say "note: $errors ERROR lines in the nodes' logs"

echo "== summary ($SWITCHES switches, $DRAWN drawers, advert ${ADVERT_MS} ms$([ "$WITNESS" -eq 1 ] && echo ", witness"))"
for line in "${ROUND_LINE[@]}"; do
    echo "  $line"
done
if [ "${#FAILURES[@]}" -eq 0 ]; then
    echo "PASS: both failovers kept the switches served through the VIP; no acknowledged grant lost"
    exit 0
fi
for f in "${FAILURES[@]}"; do
    echo "  failure: $f"
done
echo "  logs: the nodes' logs follow (last 20 lines each)"
for f in "$WORK"/primary.log "$WORK"/backup.log; do
    echo "--- $f"
    tail -n 20 "$f"
done
echo "FAIL: ${#FAILURES[@]} problem(s)"
exit 1
