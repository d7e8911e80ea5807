#!/usr/bin/env bash
# Shaped link (about 70 s): the camera in one
# network namespace, two viewers in two more, each joined to the camera by
# its own veth pair (addresses from a private test range that exists only
# inside these namespaces); the link to the second viewer is shaped on the
# camera's side to 600 kbit/s (tc tbf) with 40 ms delay (netem, or where
# the kernel has no netem, delay-line.py on a TUN device). Runs
# shaped.mjs: figures, and with SHAPED_CHECK=1 (scripts/test.sh) a test of
# issue 13's targets (see there). Needs root.
# Usage: [SHAPED_CHECK=1] shaped-bench.sh path/to/lookout [lookout args]
set -euo pipefail
LOOKOUT_BIN=$(realpath "${1:?usage: shaped-bench.sh path/to/lookout [args]}")
shift
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "shaped-bench: needs root for ip netns" >&2; exit 1; }

n=$$
cam="lqcam$n"; clean="lqcln$n"; weak="lqweak$n"
state=$(mktemp -d)
lookout_pid=""
delay_pid=""
cleanup() {
    [ -n "$lookout_pid" ] && kill "$lookout_pid" 2>/dev/null && wait "$lookout_pid" 2>/dev/null
    [ -n "$delay_pid" ] && kill "$delay_pid" 2>/dev/null && wait "$delay_pid" 2>/dev/null
    for ns in "$cam" "$clean" "$weak"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$state"
}
trap cleanup EXIT

# IPv6 off in the namespaces: the test is IPv4 only, and a veth's IPv6
# link-local address settling a moment after the page opened made Chromium
# abort the navigation with ERR_NETWORK_CHANGED (seen once).
for ns in "$cam" "$clean" "$weak"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
link() { # link VIEWER_NS CAM_IF VIEWER_IF SUBNET
    ip link add "$2" type veth peer name "$3"
    ip link set "$2" netns "$cam"
    ip link set "$3" netns "$1"
    ip -n "$cam" addr add "$4.1/24" dev "$2"
    ip -n "$1" addr add "$4.2/24" dev "$3"
    ip -n "$cam" link set "$2" up
    ip -n "$1" link set "$3" up
    ip -n "$1" route add default dev "$3"
}
link "$clean" "lqc$n" "lqv$n" 10.97.1
link "$weak" "lqs$n" "lqw$n" 10.97.2
# The camera's sends to the weak viewer: 40 ms delay, then 600 kbit/s.
if ip netns exec "$cam" tc qdisc add dev "lqs$n" root handle 1: netem delay 40ms 2>/dev/null; then
    ip netns exec "$cam" tc qdisc add dev "lqs$n" parent 1:1 handle 10: tbf rate 600kbit burst 32kbit latency 300ms
    echo "shaped link: 600 kbit/s (tbf) + 40 ms (netem)"
else
    # No sch_netem (this project's CI machine): the camera's packets to the
    # weak viewer are routed into a TUN device, where delay-line.py holds
    # each 40 ms and writes it back; coming out of the TUN device they are
    # routed (table 100) to the veth, through the tbf. accept_local: they
    # carry the camera's own address as their source.
    ip netns exec "$cam" python3 delay-line.py "lqd$n" 40 > "$state/delay-line.log" 2>&1 &
    delay_pid=$!
    for _ in $(seq 50); do ip -n "$cam" link show "lqd$n" > /dev/null 2>&1 && break; sleep 0.1; done
    ip -n "$cam" link set "lqd$n" up
    ip netns exec "$cam" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        "net.ipv4.conf.lqd$n.rp_filter=0" "net.ipv4.conf.lqd$n.accept_local=1"
    ip -n "$cam" route del 10.97.2.0/24 dev "lqs$n"
    ip -n "$cam" route add 10.97.2.0/24 dev "lqd$n"
    ip -n "$cam" route add 10.97.2.0/24 dev "lqs$n" table 100
    ip -n "$cam" rule add iif "lqd$n" lookup 100
    ip netns exec "$cam" tc qdisc add dev "lqs$n" root handle 10: tbf rate 600kbit burst 32kbit latency 300ms
    echo "shaped link: 600 kbit/s (tbf) + 40 ms (delay-line.py: this kernel has no netem qdisc)"
fi

# SHAPED_QDISC_LOG=FILE: the shaped link's qdisc counters (sent, dropped,
# backlog) once a second, to set beside the camera's link log.
if [ -n "${SHAPED_QDISC_LOG:-}" ]; then
    ( while ip netns exec "$cam" true 2>/dev/null; do
        echo "$(date -u +%T) $(ip netns exec "$cam" tc -s qdisc show dev "lqs$n" | tr '\n' ' ')"
        sleep 1
      done > "$SHAPED_QDISC_LOG" 2>/dev/null ) &
fi

ip netns exec "$cam" "$LOOKOUT_BIN" --listen 0.0.0.0:8443 --state-dir "$state" --no-mdns --no-webrtc-mdns \
    --resolution 1280x720 --fps 30 "$@" > "$state/lookout.log" 2>&1 &
lookout_pid=$!
for _ in $(seq 150); do
    grep -q "serving HTTPS" "$state/lookout.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "serving HTTPS" "$state/lookout.log" || { echo "shaped-bench: lookout did not start" >&2; cat "$state/lookout.log" >&2; exit 1; }
secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["room_secret"])' "$state/identity.json")

# Each Chromium runs in its viewer's namespace (playwright talks to it over a pipe).
for ns in "$clean" "$weak"; do
    printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$ns" > "$state/chromium-$ns"
    chmod +x "$state/chromium-$ns"
done
SHAPED_URL_CLEAN="https://10.97.1.1:8443/#room=$secret" SHAPED_URL_WEAK="https://10.97.2.1:8443/#room=$secret" \
SHAPED_BROWSER_CLEAN="$state/chromium-$clean" SHAPED_BROWSER_WEAK="$state/chromium-$weak" SHAPED_SECRET="$secret" \
    node shaped.mjs && { [ -z "${SHAPED_KEEP_LOG:-}" ] || cp "$state/lookout.log" "$SHAPED_KEEP_LOG"; } || { sed 's/\x1b\[[0-9;]*m//g' "$state/lookout.log" | tail -30 >&2; exit 1; }
