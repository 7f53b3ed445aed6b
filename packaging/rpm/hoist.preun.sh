# hoist (coordinator) %preun ($1: 0 on removal, 1 or more on an upgrade).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop hoist-coordinator.service || :
    systemctl disable hoist-coordinator.service || :
fi
