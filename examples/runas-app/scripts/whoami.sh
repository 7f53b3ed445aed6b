#!/bin/sh
# Records who runs the hook; the proof file lives in the installed tree, which the user owns.
set -eu
out=/tmp/hoist-demo/runas-app/whoami.log
echo "$LIFECYCLE_EVENT user=$(id -un) uid=$(id -u) home=$HOME" >> "$out"
cat "$out"
