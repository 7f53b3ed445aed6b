# hoist-agent %postun ($1: 0 on removal, 1 or more on an upgrade). On an upgrade a running
# agent is restarted unless a deployment is in flight: a restart would fail its current
# lifecycle event. Removal keeps /var/lib/hoist (host credentials, deployment history) and a
# modified /etc/hoist/agent.yaml (as .rpmsave); delete them by hand to forget the host.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ] && systemctl is-active --quiet hoist-agent.service; then
        dir=$(sed -n 's/^state_dir:[[:space:]]*["'\'']\{0,1\}\([^"'\''#[:space:]]*\).*/\1/p' /etc/hoist/agent.yaml 2>/dev/null | head -n 1)
        # in-flight.log, or in-flight.json from a version before it.
        if [ -e "${dir:-/var/lib/hoist}/in-flight.log" ] || [ -e "${dir:-/var/lib/hoist}/in-flight.json" ]; then
            echo "hoist-agent: a deployment is in flight, so the running agent was not restarted; the new version takes effect at the next restart (systemctl restart hoist-agent once \`hoist-agent status\` shows no deployment in flight)"
        else
            systemctl restart hoist-agent.service || :
        fi
    fi
fi
