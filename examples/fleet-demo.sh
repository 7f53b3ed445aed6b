#!/usr/bin/env bash
# The fleet demo: a coordinator rolling a revision out to three tagged hosts, on this machine,
# without root. It starts `hoist server` on a free loopback port with a temporary data
# directory, three `hoist-agent run` daemons (hosts web-1, web-2, web-3, tagged role=web and
# a zone each, with state directories of their own), creates an application and a group,
# registers the hosts with a registration token it creates, pushes examples/fleet-app, runs
# `hoist deploy create --wait`, and shows `hoist hosts list`, `hoist deploy status` and one
# `hoist-agent status`. Everything it started is stopped when it exits, also on Ctrl-C.
#
# Each host installs into a directory of its own: the bundle's hooks install the site into
# $HOIST_DEMO_DIR, which each agent sets in its own hook environment file. (Separate hosts
# would each use the same absolute paths; on one machine without root that needs a mount
# namespace per agent, which unprivileged users do not get everywhere.)
#
# Usage: examples/fleet-demo.sh [--keep]
#   --keep   leave the coordinator and the agents running and print commands to explore.
# Builds the debug binaries with cargo unless HOIST_BIN_DIR names a directory holding
# `hoist` and `hoist-agent`. Writes nothing outside a new directory under $TMPDIR (/tmp).
set -euo pipefail

keep=no
case "${1:-}" in
    "") ;;
    --keep) keep=yes ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fleet-demo.sh: unknown argument $1 (try --keep or --help)" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${HOIST_BIN_DIR:-}" ]; then
    bin="$HOIST_BIN_DIR"
else
    echo "building hoist and hoist-agent (cargo build) ..."
    # The whole workspace's binaries, as `cargo test --workspace` builds them: the same
    # features, so neither build undoes the other.
    (cd "$repo" && cargo build --quiet --workspace --bins)
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
    case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
fi
hoist="$bin/hoist"
agent="$bin/hoist-agent"
for b in "$hoist" "$agent"; do
    [ -x "$b" ] || { echo "fleet-demo.sh: $b is not an executable" >&2; exit 2; }
done
# The operator settings of the caller's shell must not point this demo elsewhere.
unset HOIST_SERVER HOIST_TOKEN HOIST_CA_FILE HOIST_OPERATOR_TOKEN

demo="$(mktemp -d "${TMPDIR:-/tmp}/hoist-fleet-demo.XXXXXX")"
chmod 755 "$demo"
hosts=(web-1 web-2 web-3)
zones=(a b c)
pids=()
ok=no

# Stops what this run started: the agents (SIGTERM, as systemd would), the servers their
# start hooks left running (by process group, recorded by the bundle's start.sh), then the
# coordinator. It is also written to stop.sh for --keep.
cat > "$demo/stop.sh" <<STOP
#!/bin/sh
# Stops what examples/fleet-demo.sh left running in $demo and removes it.
for f in "$demo"/*.pid; do [ -f "\$f" ] && kill -TERM "\$(cat "\$f")" 2>/dev/null; done
for f in "$demo"/*.pid; do
    [ -f "\$f" ] || continue
    p=\$(cat "\$f"); n=0
    while kill -0 "\$p" 2>/dev/null && [ \$n -lt 100 ]; do sleep 0.1; n=\$((n + 1)); done
    kill -KILL "\$p" 2>/dev/null
done
for f in "$demo"/*/www-root/server.pgid; do
    [ -f "\$f" ] && kill -TERM "-\$(cat "\$f")" 2>/dev/null
done
rm -rf "$demo"
exit 0
STOP
chmod 755 "$demo/stop.sh"

cleanup() {
    status=$?
    # Whatever happens from here on (a closed stdout included), everything gets stopped.
    set +e
    trap - EXIT INT TERM HUP
    trap '' PIPE
    if [ "$keep" = yes ] && [ "$ok" = yes ]; then
        return
    fi
    if [ "$ok" != yes ]; then
        # Keep the logs of a failed run: they say what went wrong.
        logs="$(mktemp -d "${TMPDIR:-/tmp}/hoist-fleet-demo-logs.XXXXXX")"
        cp "$demo"/*.log "$logs/" 2>/dev/null
        for h in "${hosts[@]}"; do cp "$demo/$h/agent.log" "$logs/$h.log" 2>/dev/null; done
    fi
    "$demo/stop.sh"
    # Reap the agents and the coordinator (children of this shell).
    wait 2>/dev/null
    if [ "$ok" != yes ]; then
        case $status in
            129 | 130 | 141 | 143) echo "fleet demo interrupted; everything it started is stopped (logs kept in $logs)" >&2 ;;
            *) echo "fleet demo failed (exit $status); everything it started is stopped (logs kept in $logs)" >&2 ;;
        esac
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

echo "== starting the coordinator (data in $demo/coordinator)"
"$hoist" server --listen 127.0.0.1:0 --data-dir "$demo/coordinator" \
    </dev/null >/dev/null 2>"$demo/coordinator.log" &
echo $! > "$demo/coordinator.pid"
addr=""
for _ in $(seq 300); do
    addr="$(sed -n 's/^listening on //p' "$demo/coordinator.log" | head -n 1)"
    [ -n "$addr" ] && break
    kill -0 "$(cat "$demo/coordinator.pid")" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "fleet-demo.sh: hoist server did not start:" >&2
    cat "$demo/coordinator.log" >&2
    exit 1
fi
export HOIST_SERVER="http://$addr"
HOIST_TOKEN="$(cat "$demo/coordinator/operator-token")"
export HOIST_TOKEN
echo "   listening on $HOIST_SERVER; operator token in $demo/coordinator/operator-token"

"$hoist" app create web-app >/dev/null
"$hoist" group create web --app web-app --tag role=web --config HalfAtATime >/dev/null
registration="$("$hoist" token create --expires 1h --max-uses "${#hosts[@]}" 2>/dev/null)"
echo "== application web-app, group web (hosts tagged role=web), a registration token for ${#hosts[@]} hosts"

echo "== starting ${#hosts[@]} agents: ${hosts[*]}"
for i in "${!hosts[@]}"; do
    h="${hosts[$i]}"
    d="$demo/$h"
    mkdir -p "$d/www-root"
    echo "HOIST_DEMO_DIR=$d/www-root" > "$d/hook.env"
    cat > "$d/agent.yaml" <<YAML
coordinator:
  url: $HOIST_SERVER
  registration_token: $registration
host:
  name: $h
  tags: {role: web, zone: ${zones[$i]}}
state_dir: $d/state
poll:
  initial_backoff_ms: 200
  max_backoff_secs: 2
hooks:
  environment_file: $d/hook.env
  stop_grace_secs: 5
  kill_grace_secs: 2
YAML
    HOIST_LOG=info "$agent" run --config "$d/agent.yaml" </dev/null >/dev/null 2>"$d/agent.log" &
    echo $! > "$demo/$h.pid"
done
for _ in $(seq 300); do
    online="$("$hoist" hosts list | grep -c ' online ' || true)"
    [ "$online" -ge "${#hosts[@]}" ] && break
    sleep 0.2
done
if [ "$online" -lt "${#hosts[@]}" ]; then
    echo "fleet-demo.sh: only $online of ${#hosts[@]} hosts came online" >&2
    exit 1
fi

echo "== pushing examples/fleet-app"
revision="$("$hoist" push "$repo/examples/fleet-app" --app web-app)"

echo "== deploying revision $revision to web-app/web (HalfAtATime)"
id="$("$hoist" deploy create --app web-app --group web --revision "$revision" --wait)"

echo
echo "\$ hoist hosts list"
"$hoist" hosts list
echo
echo "\$ hoist deploy status $id"
"$hoist" deploy status "$id"
echo
echo "\$ hoist-agent status --config $demo/${hosts[0]}/agent.yaml"
status=0
"$agent" status --config "$demo/${hosts[0]}/agent.yaml" || status=$?
[ "$status" -eq 0 ] || { echo "fleet-demo.sh: hoist-agent status exited $status" >&2; exit 1; }
echo
echo "Each host installed the site into its own directory:"
for h in "${hosts[@]}"; do echo "   $demo/$h/www-root/www ($(head -n 1 "$demo/$h/www-root/serving" 2>/dev/null || echo 'not serving'))"; done
ok=yes

if [ "$keep" = yes ]; then
    cat <<EXPLORE

The coordinator and the agents keep running. To explore:
   export HOIST_SERVER=$HOIST_SERVER HOIST_TOKEN=$HOIST_TOKEN
   $hoist hosts list
   $hoist deploy list
   $hoist deploy create --app web-app --group web --revision $revision --wait
   $agent status --config $demo/web-2/agent.yaml
Stop everything and remove $demo:
   $demo/stop.sh
EXPLORE
else
    echo
    echo "Stopping everything (run with --keep to explore further)."
fi
