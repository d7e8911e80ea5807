#!/usr/bin/env bash
# The viewer across a (virtual) LAN, with everything at its defaults: the
# camera in one network namespace, Chromium in another, joined by a veth
# pair with addresses from a private test range that exists only inside
# these namespaces. Chromium hides its address behind an mDNS `.local`
# name, as it does on a real LAN, so this checks the path a phone takes.
# Needs root (ip netns). Usage: lan-test.sh path/to/lookout
set -euo pipefail
LOOKOUT_BIN=$(realpath "${1:?usage: lan-test.sh path/to/lookout}")
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "lan-test: FAIL: needs root for ip netns" >&2; exit 1; }

suffix=$$
cam="lkcam$suffix"; view="lkview$suffix"
state=$(mktemp -d)
neighbour_state=$(mktemp -d)
lookout_pid=""
neighbour_pid=""
cleanup() {
    [ -n "$lookout_pid" ] && kill "$lookout_pid" 2>/dev/null && wait "$lookout_pid" 2>/dev/null
    [ -n "$neighbour_pid" ] && kill "$neighbour_pid" 2>/dev/null && wait "$neighbour_pid" 2>/dev/null
    ip netns del "$cam" 2>/dev/null || true
    ip netns del "$view" 2>/dev/null || true
    rm -rf "$state" "$neighbour_state"
}
trap cleanup EXIT

ip netns add "$cam"
ip netns add "$view"
ip link add "lkc$suffix" type veth peer name "lkv$suffix"
ip link set "lkc$suffix" netns "$cam"
ip link set "lkv$suffix" netns "$view"
ip -n "$cam" addr add 10.99.0.1/24 dev "lkc$suffix"
ip -n "$view" addr add 10.99.0.2/24 dev "lkv$suffix"
for ns in "$cam" "$view"; do ip -n "$ns" link set lo up; done
ip -n "$cam" link set "lkc$suffix" up
ip -n "$view" link set "lkv$suffix" up
# mDNS (224.0.0.251) and everything else stay on the veth link.
ip -n "$cam" route add 224.0.0.0/4 dev "lkc$suffix"
ip -n "$view" route add 224.0.0.0/4 dev "lkv$suffix"
ip -n "$cam" route add default dev "lkc$suffix"
ip -n "$view" route add default dev "lkv$suffix"

ip netns exec "$cam" "$LOOKOUT_BIN" --listen 10.99.0.1:8443 --state-dir "$state" \
    --resolution 1280x720 --log info,lookout=debug > "$state/lookout.log" 2>&1 &
lookout_pid=$!
for _ in $(seq 100); do
    grep -q "serving HTTPS" "$state/lookout.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "serving HTTPS" "$state/lookout.log" || { echo "lan-test: FAIL: lookout did not start" >&2; cat "$state/lookout.log" >&2; exit 1; }

# A second camera (no video) on the viewer's side of the link: the first one
# must find it over mDNS and its page must link to it.
ip netns exec "$view" "$LOOKOUT_BIN" --listen 10.99.0.2:8444 --state-dir "$neighbour_state" --no-camera \
    > "$neighbour_state/lookout.log" 2>&1 &
neighbour_pid=$!
for _ in $(seq 150); do
    grep -q "mDNS: another camera" "$state/lookout.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "mDNS: another camera" "$state/lookout.log" \
    || { echo "lan-test: FAIL: the camera did not see the second one over mDNS" >&2; cat "$state/lookout.log" "$neighbour_state/lookout.log" >&2; exit 1; }

status=0
LAN_URL="https://10.99.0.1:8443/" LAN_STATE="$state" LAN_NEIGHBOUR_STATE="$neighbour_state" ip netns exec "$view" \
    node --test --test-concurrency=1 lan.spec.mjs || status=$?
if [ $status -ne 0 ]; then
    echo "lan-test: lookout's log:" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$state/lookout.log" | tail -40 >&2
fi
exit $status
