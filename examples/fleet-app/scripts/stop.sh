#!/bin/sh
# Stops the server the previous revision started (its whole process group).
set -eu
"$(dirname "$0")/record-event.sh"
if [ -f "$HOIST_DEMO_DIR/server.pgid" ]; then
    kill -TERM "-$(cat "$HOIST_DEMO_DIR/server.pgid")" 2>/dev/null || true
    rm -f "$HOIST_DEMO_DIR/server.pgid"
    echo "server stopped"
fi
