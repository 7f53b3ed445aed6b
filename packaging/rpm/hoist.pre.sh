# hoist (coordinator) %pre: the system user that runs `hoist server`.
getent group hoist >/dev/null || groupadd --system hoist
if ! getent passwd hoist >/dev/null; then
    nologin=$(command -v nologin || echo /sbin/nologin)
    useradd --system --gid hoist --home-dir /var/lib/hoist-coordinator --no-create-home \
        --shell "$nologin" --comment "Hoist coordinator" hoist
fi
