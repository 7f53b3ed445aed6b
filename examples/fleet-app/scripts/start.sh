#!/bin/sh
# Starts the "server": a background loop that outlives the hook, as a real service would.
# The hook runs in a process group of its own, which the loop inherits: its id goes to
# server.pgid, so stop.sh (and the demo's cleanup) stop the loop and its `sleep` together.
set -eu
"$(dirname "$0")/record-event.sh"
( while true; do head -n 1 "$HOIST_DEMO_DIR/www/index.html" > "$HOIST_DEMO_DIR/serving"; sleep 2; done ) \
    > /dev/null 2>&1 &
# Field 5 of /proc/PID/stat is the process group (the name, field 2, has no spaces here).
cut -d' ' -f5 /proc/$$/stat > "$HOIST_DEMO_DIR/server.pgid"
echo "server started in process group $(cat "$HOIST_DEMO_DIR/server.pgid")"
