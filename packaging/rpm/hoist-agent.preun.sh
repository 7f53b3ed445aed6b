# hoist-agent %preun ($1: 0 on removal, 1 or more on an upgrade). Removal stops and disables
# the agent; applications that hooks started keep running (KillMode=process).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop hoist-agent.service || :
    systemctl disable hoist-agent.service || :
fi
