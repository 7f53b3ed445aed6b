#!/bin/sh
# Stops the server the previous revision started.
set -eu
dir="${HOIST_DEMO_DIR:-/tmp/hoist-demo}"
"$(dirname "$0")/record-event.sh"
if [ -f "$dir/server.pid" ]; then
    kill "$(cat "$dir/server.pid")" 2>/dev/null || true
    rm -f "$dir/server.pid"
    echo "server stopped"
fi
