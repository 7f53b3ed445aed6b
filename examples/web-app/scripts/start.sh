#!/bin/sh
# Starts the "server": a background loop that keeps its stdout (no redirection), as many
# real start scripts do. The deployment must not wait for it, and it must keep running.
set -eu
dir="${HOIST_DEMO_DIR:-/tmp/hoist-demo}"
"$(dirname "$0")/record-event.sh"
( while true; do echo "serving $(cat "$dir/www/index.html" | head -n 1)"; sleep 5; done ) &
echo $! > "$dir/server.pid"
echo "server started with pid $(cat "$dir/server.pid")"
