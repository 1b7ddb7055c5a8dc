#!/usr/bin/env bash
# Capture real keepalived VRRP advertisements for the codec tests in
# vrrp/src/wire/tests.rs.
#
# Usage (as root):  vrrp/tests/capture/capture-keepalived.sh [OUTDIR]
#
# Lab (nothing is created in the root namespace, only 192.0.2.0/24 is used):
#
#   vpcap-<pid>-h1 (192.0.2.1)        vpcap-<pid>-sw            vpcap-<pid>-h2 (192.0.2.2)
#   keepalived -- eth0 ==== veth ==== p1 [br0] p2 ==== veth ==== eth0 -- tcpdump
#
# keepalived runs four instances on h1, one per capture case:
#   a) VRRPv2, no auth,                 vrid 51, prio 150, advert_int 1,   VIP .100
#   b) VRRPv2, auth PASS "secret1",     vrid 52, prio 100, advert_int 1,   VIPs .101 .102
#   c) VRRPv3,                          vrid 53, prio 200, advert_int 1,   VIP .103
#   d) VRRPv3,                          vrid 54, prio 100, advert_int 0.1, VIP .104
# Once every instance is MASTER, keepalived gets SIGTERM and sends
#   e) one priority-0 advertisement per instance ("I am leaving").
#
# OUTDIR (default /tmp/vpcap-<pid>-out) receives keepalived.conf,
# keepalived.log, vrrp.pcap (Ethernet, as seen on h2) and adverts.txt: for the
# first advert of each (vrid, priority) pair the IP source/destination/TTL and
# the hex of the full IPv4 header and of the VRRP message. Everything else
# (namespaces, bridge, veths, keepalived, tcpdump, pid files) is removed on
# exit, also on failure, Ctrl-C or SIGTERM.
#
# Requires: iproute2, keepalived (captures made with v2.2.7), tcpdump, tshark.

set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "must run as root (network namespaces)" >&2
    exit 1
fi
for tool in ip keepalived tcpdump tshark; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

tag="vpcap-$$"
SW="$tag-sw"
H1="$tag-h1"
H2="$tag-h2"
work=$(mktemp -d "/tmp/$tag.XXXXXX")
out=${1:-/tmp/$tag-out}
mkdir -p "$out"
ka_pid=""
dump_pid=""

cleanup() {
    set +e
    # Only the processes this script started, by pid.
    [[ -n $ka_pid ]] && kill "$ka_pid" 2>/dev/null && wait "$ka_pid" 2>/dev/null
    [[ -n $dump_pid ]] && kill "$dump_pid" 2>/dev/null && wait "$dump_pid" 2>/dev/null
    # Deleting a namespace deletes its veth ends and the bridge with it.
    for ns in "$H1" "$H2" "$SW"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the lab -----------------------------------------------------------------
ip netns add "$SW"
ip netns add "$H1"
ip netns add "$H2"
ip -n "$SW" link add br0 type bridge mcast_snooping 0
ip -n "$SW" link set br0 up
n=1
for ns in "$H1" "$H2"; do
    # Created inside the switch namespace, peer moved straight into the host:
    # no interface ever exists in the root namespace.
    ip -n "$SW" link add "p$n" type veth peer name eth0 netns "$ns"
    ip -n "$SW" link set "p$n" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "192.0.2.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    n=$((n + 1))
done

# --- keepalived configuration -------------------------------------------------
cat >"$out/keepalived.conf" <<'EOF'
global_defs {
    router_id vpcap
    # keepalived's defaults, spelled out: no vrrp_strict (it would refuse
    # authentication), VRRPv2 unless an instance says otherwise.
    vrrp_version 2
}

vrrp_instance a_v2_noauth {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        192.0.2.100/24
    }
}

vrrp_instance b_v2_pass {
    state MASTER
    interface eth0
    virtual_router_id 52
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secret1
    }
    virtual_ipaddress {
        192.0.2.101/24
        192.0.2.102/24
    }
}

vrrp_instance c_v3 {
    version 3
    state MASTER
    interface eth0
    virtual_router_id 53
    priority 200
    advert_int 1
    virtual_ipaddress {
        192.0.2.103/24
    }
}

vrrp_instance d_v3_fast {
    version 3
    state MASTER
    interface eth0
    virtual_router_id 54
    priority 100
    advert_int 0.1
    virtual_ipaddress {
        192.0.2.104/24
    }
}
EOF

# --- capture -----------------------------------------------------------------
ip netns exec "$H2" tcpdump -i eth0 -n -U -s 0 -w "$out/vrrp.pcap" 'ip proto 112' \
    2>"$work/tcpdump.err" &
dump_pid=$!
sleep 1

ip netns exec "$H1" keepalived -n -l -D -G -P \
    -f "$out/keepalived.conf" -p "$work/keepalived.pid" -r "$work/vrrp.pid" \
    >"$out/keepalived.log" 2>&1 &
ka_pid=$!

# Wait until all four instances are MASTER (at most 3 * advert_int + skew).
for _ in $(seq 1 30); do
    masters=$(grep -c 'Entering MASTER STATE' "$out/keepalived.log" || true)
    [[ $masters -ge 4 ]] && break
    sleep 1
done
if [[ ${masters:-0} -lt 4 ]]; then
    echo "keepalived did not become MASTER on every instance:" >&2
    cat "$out/keepalived.log" >&2
    exit 1
fi
sleep 3 # a few steady-state adverts from each instance

# e) SIGTERM while MASTER: keepalived sends priority 0 before releasing the VIPs.
kill -TERM "$ka_pid"
wait "$ka_pid" || true
ka_pid=""
sleep 1
kill "$dump_pid"
wait "$dump_pid" 2>/dev/null || true
dump_pid=""

# --- extract -----------------------------------------------------------------
# tcpdump -x prints the packet without its link-level header: IPv4 header + VRRP.
tcpdump -r "$out/vrrp.pcap" -n -x 2>/dev/null | python3 -c '
import sys, re
pkts, cur = [], None
for line in sys.stdin:
    m = re.match(r"\s+0x[0-9a-f]+:\s+(.*)", line)
    if m:
        cur += bytes.fromhex(m.group(1).replace(" ", ""))
    else:
        if cur is not None:
            pkts.append(cur)
        cur = bytearray()
if cur:
    pkts.append(cur)
seen = set()
for p in pkts:
    ihl = (p[0] & 0x0f) * 4
    total = int.from_bytes(p[2:4], "big")
    ip, msg = p[:ihl], p[ihl:total]
    key = (msg[1], msg[2])
    if key in seen:
        continue
    seen.add(key)
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    print(f"vrrp v{msg[0] >> 4} vrid {msg[1]} prio {msg[2]}: src {src} dst {dst} ttl {ip[8]} tos 0x{ip[1]:02x}")
    print(f"  ip   {ip.hex()}")
    print(f"  vrrp {msg.hex()}")
' >"$out/adverts.txt"

echo "--- tshark's view (v3 checksum with pseudo-header)"
tshark -r "$out/vrrp.pcap" -o vrrp.v3_checksum_as_in_v2:FALSE \
    -T fields -E header=y -e frame.number -e ip.src -e ip.dst -e ip.ttl \
    -e vrrp.version -e vrrp.virt_rtr_id -e vrrp.prio -e vrrp.checksum.status \
    2>/dev/null | awk 'NR == 1 || !seen[$6 " " $7]++'
echo "--- first advert of each (vrid, priority)"
cat "$out/adverts.txt"
echo "--- results in $out"
