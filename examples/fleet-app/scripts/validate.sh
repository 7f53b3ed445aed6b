#!/bin/sh
# Checks that the server runs and the site is in place.
set -eu
"$(dirname "$0")/record-event.sh"
kill -0 "-$(cat "$HOIST_DEMO_DIR/server.pgid")"
test -f "$HOIST_DEMO_DIR/www/index.html"
echo "service is healthy"
