#!/bin/sh
# Checks that the server runs and the site is in place.
set -eu
dir="${HOIST_DEMO_DIR:-/tmp/hoist-demo}"
"$(dirname "$0")/record-event.sh"
kill -0 "$(cat "$dir/server.pid")"
test -f "$dir/www/index.html"
echo "service is healthy"
