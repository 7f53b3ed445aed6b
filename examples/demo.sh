#!/usr/bin/env bash
# A local demo deployment: builds hoist-agent, then deploys examples/web-app twice into a
# temporary directory (state and installed files), showing the lifecycle, the hook order and
# how the second deployment runs the first revision's ApplicationStop.
# Usage: examples/demo.sh   (no root needed; nothing is written outside the temp directory)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --quiet -p hoist-agent
agent="${CARGO_TARGET_DIR:-$repo/target}/debug/hoist-agent"

demo="$(mktemp -d /tmp/hoist-demo.XXXXXX)"
chmod 755 "$demo"
# The example's appspec installs under /tmp/hoist-demo; point it at this run's directory.
cp -a examples/web-app "$demo/bundle"
sed -i "s#/tmp/hoist-demo#$demo/root#g" "$demo/bundle/appspec.yml"
echo "HOIST_DEMO_DIR=$demo/root" > "$demo/hook.env"
cat > "$demo/agent.yaml" <<YAML
state_dir: $demo/state
hooks:
  environment_file: $demo/hook.env
  kill_grace_secs: 2
YAML

"$agent" validate "$demo/bundle"
echo
"$agent" deploy --bundle "$demo/bundle" --app web-app --group demo --config "$demo/agent.yaml"
echo
echo "== second deployment of the same bundle (runs the first revision's ApplicationStop) =="
"$agent" deploy --bundle "$demo/bundle" --app web-app --group demo --config "$demo/agent.yaml"
echo
echo "== hook order ($demo/root/events.log) =="
cat "$demo/root/events.log"
echo
echo "== installed files =="
find "$demo/root/www" "$demo/root/etc" -exec ls -ld {} + | awk '{print $1, $NF}'
# Stop the demo server the start hook left running.
if [ -f "$demo/root/server.pid" ]; then kill "$(cat "$demo/root/server.pid")" 2>/dev/null || true; fi
echo
echo "Everything is under $demo (remove it with: rm -rf $demo)"
