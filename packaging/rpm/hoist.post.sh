# hoist (coordinator) %post ($1: 1 on a first install, 2 or more on an upgrade).
[ -d /var/lib/hoist-coordinator ] || install -d -m 0700 -o hoist -g hoist /var/lib/hoist-coordinator
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        systemctl enable hoist-coordinator.service || :
        systemctl start hoist-coordinator.service || :
    fi
fi
