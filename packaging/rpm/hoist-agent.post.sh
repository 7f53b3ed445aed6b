# hoist-agent %post ($1: 1 on a first install, 2 or more on an upgrade).
# Traversable on purpose: hooks that run as other users must reach their scripts; the agent
# keeps its secrets inside at mode 0600.
[ -d /var/lib/hoist ] || install -d -m 0755 /var/lib/hoist
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        systemctl enable hoist-agent.service || :
        if grep -q '^coordinator:' /etc/hoist/agent.yaml 2>/dev/null; then
            systemctl start hoist-agent.service || :
        else
            echo "hoist-agent: set coordinator.url and a registration token in /etc/hoist/agent.yaml, then run: systemctl start hoist-agent"
        fi
    fi
fi
