#!/bin/sh
# Appends "<event> <deployment id>" to $HOIST_DEMO_DIR/events.log.
set -eu
mkdir -p "$HOIST_DEMO_DIR"
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$HOIST_DEMO_DIR/events.log"
echo "recorded $LIFECYCLE_EVENT for $APPLICATION_NAME in $DEPLOYMENT_GROUP_NAME"
