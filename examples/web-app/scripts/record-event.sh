#!/bin/sh
# Appends "<event> <deployment id>" to the proof file.
set -eu
dir="${HOIST_DEMO_DIR:-/tmp/hoist-demo}"
mkdir -p "$dir"
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$dir/events.log"
echo "recorded $LIFECYCLE_EVENT for $APPLICATION_NAME in $DEPLOYMENT_GROUP_NAME"
