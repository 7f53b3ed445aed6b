# hoist (coordinator) %postun ($1: 0 on removal, 1 or more on an upgrade). Removal keeps the
# coordinator's data in /var/lib/hoist-coordinator and the user `hoist`.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart hoist-coordinator.service || :
    fi
fi
