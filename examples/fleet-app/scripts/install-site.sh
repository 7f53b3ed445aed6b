#!/bin/sh
# Installs the site into this host's $HOIST_DEMO_DIR/www (the hook runs in the bundle root).
set -eu
"$(dirname "$0")/record-event.sh"
rm -rf "$HOIST_DEMO_DIR/www.new"
cp -R site "$HOIST_DEMO_DIR/www.new"
rm -rf "$HOIST_DEMO_DIR/www"
mv "$HOIST_DEMO_DIR/www.new" "$HOIST_DEMO_DIR/www"
echo "installed the site into $HOIST_DEMO_DIR/www"
