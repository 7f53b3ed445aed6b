#!/usr/bin/env bash
# The opt-in heavy end-to-end test of the packages under a real systemd (not part of CI).
#
# Boots a debootstrapped Debian root (the host's release, from the host's apt mirror) with
# `systemd-nspawn -b` and a private network, installs the hoist and hoist-agent .debs inside,
# runs hoist-coordinator.service and hoist-agent.service as real services talking over the
# container's loopback, and deploys a bundle whose ApplicationStart starts a background app
# and whose ValidateService hook sleeps. During that hook it
#   1. runs `systemctl restart hoist-agent`: the app survives (KillMode=process), the hook is
#      stopped after hooks.stop_grace_secs and the host's command is reported as stopped; a
#      file system ApplicationStart mounted is the whole system's, before and after;
#   2. (a second deployment) SIGKILLs the agent's main process: systemd restarts it, the new
#      agent kills the orphaned hook and reports "agent restarted during ValidateService",
#      and that deployment's app survives too;
# then checks `hoist-agent status`, the structured journal fields of the agent's log
# (`journalctl -o json -u hoist-agent`), and prints `systemd-analyze security` of both units
# as the booted system sees them next to the offline scores.
#
# Needs root, network access to the apt mirror on the first run, and about 400 MB under the
# target directory. Builds the packages with packaging/build.sh when they are missing. The
# debootstrapped root is cached in $CARGO_TARGET_DIR/nspawn (default target/nspawn) and
# copied for every run; delete that directory to start from nothing.
#
# Every check prints "PASS: ..." or "FAIL: ..."; the script exits non-zero when any failed.
# It stops the container and undoes its mounts on every exit.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
out=$target_dir/packages
work=$target_dir/nspawn
machine_name=hoist-nspawn-test
machine=$work/machine
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: runs the command quietly, counts the result.
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }
die() { echo "nspawn-test.sh: $*" >&2; exit 2; }
not() { ! "$@"; }
started_at=$(date +%s)

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, systemd-nspawn, mounts)"

# --- cleanup: the container, our mounts, the machine copy ---------------------------------

nspawn_pid=
mounted_nspawn_dir=no
cleanup() {
    local status=$?
    set +e
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        echo "stopping the container"
        # SIGTERM asks systemd-nspawn for an orderly shutdown of the container.
        kill -TERM "$nspawn_pid"
        for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$nspawn_pid" 2>/dev/null; then
            echo "the container did not shut down in 30 s; killing it"
            kill -KILL "$nspawn_pid"
            sleep 1
        fi
    fi
    # Whatever is still mounted below the machine's root (deepest first).
    if [ -d "$machine" ]; then
        findmnt -rn -o TARGET | grep -F "$machine" | sort -r | while read -r m; do
            umount -l "$m"
        done
        rm -rf "$machine"
    fi
    if [ "$mounted_nspawn_dir" = yes ]; then
        umount /run/systemd/nspawn
    fi
    local elapsed=$(($(date +%s) - started_at))
    echo
    echo "$passed passed, $failed failed ($elapsed s)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites --------------------------------------------------------------------------

step "prerequisites"
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v jq >/dev/null || need+=(jq)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get install -y -qq "${need[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } \
        || die "cannot install ${need[*]}"
fi
. /etc/os-release
codename=${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME}
[ "${ID:-}" = debian ] || die "the host must be Debian (it debootstraps the host's release)"

# The host's apt mirror for $codename: a deb822 .sources stanza naming the suite, else a
# one-line `deb URI SUITE ...` entry, else deb.debian.org.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$codename" '
            BEGIN { RS = "" }
            {
                uris = ""; types = ""; found = 0
                n = split($0, lines, "\n")
                for (i = 1; i <= n; i++) {
                    line = lines[i]
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    if (line ~ /^Types:/) types = line
                    if (line ~ /^Suites:/) {
                        m = split(line, words, /[ \t]+/)
                        for (j = 2; j <= m; j++) if (words[j] == suite) found = 1
                    }
                }
                if (found && uris != "" && types ~ /[ \t]deb([ \t]|$)/) { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$codename" '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }')
    echo "${uri:-http://deb.debian.org/debian}"
}
mirror=$(host_mirror)
echo "Debian $codename from $mirror"

# --- packages -------------------------------------------------------------------------------

step "packages"
# The newest-sorting package file matching a pattern in $out, or nothing.
find_deb() {
    local f
    for f in "$out"/$1; do
        if [ -f "$f" ]; then echo "$f"; fi
    done | tail -n 1
}
agent_deb=$(find_deb 'hoist-agent_*.deb')
hoist_deb=$(find_deb 'hoist_*.deb')
if [ -z "$agent_deb" ] || [ -z "$hoist_deb" ]; then
    echo "no packages in $out: running packaging/build.sh"
    packaging/build.sh
    agent_deb=$(find_deb 'hoist-agent_*.deb')
    hoist_deb=$(find_deb 'hoist_*.deb')
fi
[ -n "$agent_deb" ] && [ -n "$hoist_deb" ] || die "packaging/build.sh wrote no .debs to $out"
echo "$(basename "$hoist_deb"), $(basename "$agent_deb")"

# --- the root filesystem --------------------------------------------------------------------

step "Debian $codename root"
base=$work/rootfs-$codename
if [ ! -e "$base/.hoist-complete" ]; then
    rm -rf "$base"
    mkdir -p "$work"
    echo "debootstrap into $base (about a minute; cached for later runs)"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps \
        "$codename" "$base" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log"; die "debootstrap failed (log: $work/debootstrap.log)"; }
    touch "$base/.hoist-complete"
else
    echo "cached: $base"
fi
rm -rf "$machine"
cp -a "$base" "$machine"
rm -f "$machine/.hoist-complete"
echo "$machine_name" >"$machine/etc/hostname"
mkdir -p "$machine/root/debs"
cp "$hoist_deb" "$agent_deb" "$machine/root/debs/"

# The test bundle. ApplicationStart starts the "app", a detached loop that records its
# heartbeat; ValidateService sleeps far longer than the test waits, recording its pid first.
bundle=$machine/root/bundle
mkdir -p "$bundle/scripts"
cat >"$bundle/appspec.yml" <<'EOF'
version: 0.0
os: linux
files:
  - source: app.sh
    destination: /opt/nspawn-app
hooks:
  ApplicationStart:
    - location: scripts/start.sh
      timeout: 60
  ValidateService:
    - location: scripts/validate.sh
      timeout: 900
EOF
cat >"$bundle/app.sh" <<'EOF'
#!/bin/sh
# The application: beats once a second until killed.
while true; do date +%s >"/var/lib/nspawn-app/$1.beat"; sleep 1; done
EOF
cat >"$bundle/scripts/start.sh" <<'EOF'
#!/bin/sh
set -eu
mkdir -p /var/lib/nspawn-app /mnt/nspawn-app
# A file system the application needs, mounted by the hook (as bundles mount data volumes).
mountpoint -q /mnt/nspawn-app || mount -t tmpfs nspawn-app /mnt/nspawn-app
nohup /opt/nspawn-app/app.sh "$DEPLOYMENT_ID" >/dev/null 2>&1 &
echo $! >"/var/lib/nspawn-app/$DEPLOYMENT_ID.pid"
echo "app started with pid $!"
EOF
cat >"$bundle/scripts/validate.sh" <<'EOF'
#!/bin/sh
echo "validating $DEPLOYMENT_ID: this takes a while"
echo $$ >"/var/lib/nspawn-app/$DEPLOYMENT_ID.validate.pid"
sleep 600
echo "validated"
EOF
chmod 755 "$bundle/app.sh" "$bundle/scripts/"*.sh

# --- boot -----------------------------------------------------------------------------------

step "boot the container"
if ! mountpoint -q /run/systemd/nspawn; then
    mkdir -p /run/systemd/nspawn
    mount -t tmpfs tmpfs /run/systemd/nspawn
    mounted_nspawn_dir=yes
fi
# --private-network: the coordinator's port 8443 stays inside the container (loopback only).
systemd-nspawn --quiet --boot --directory="$machine" --machine="$machine_name" \
    --register=no --keep-unit --private-network --console=read-only \
    </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!

# The container's init: a process below systemd-nspawn that is pid 1 in its own namespace.
leader=
for _ in $(seq 100); do
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log"; die "systemd-nspawn exited"; }
    for pid in $(pgrep -P "$nspawn_pid") $(for c in $(pgrep -P "$nspawn_pid"); do pgrep -P "$c"; done); do
        if awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$pid/status" 2>/dev/null; then
            leader=$pid
            break 2
        fi
    done
    sleep 0.1
done
[ -n "$leader" ] || die "cannot find the container's init below systemd-nspawn ($nspawn_pid)"

# inside COMMAND...: runs a command in the container, with a clean environment.
inside() {
    nsenter --target "$leader" --mount --uts --ipc --net --pid --root --wd \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

booted=
for _ in $(seq 120); do
    booted=$(inside timeout 5 systemctl is-system-running --wait 2>/dev/null || true)
    case "$booted" in running | degraded) break ;; esac
    sleep 1
done
case "$booted" in
running) pass "the container booted: systemd is running" ;;
degraded)
    pass "the container booted (degraded: $(inside systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd ' '))"
    ;;
*)
    tail -n 30 "$work/console.log"
    die "the container did not finish booting (state: ${booted:-none})"
    ;;
esac
echo "init pid $leader on the host; $(inside systemctl --version | head -n 1)"

# --- install --------------------------------------------------------------------------------

step "install the .debs"
install_log=$(inside sh -c 'dpkg -i /root/debs/hoist_*.deb /root/debs/hoist-agent_*.deb' 2>&1) \
    || { echo "$install_log"; die "dpkg -i failed inside the container"; }
echo "$install_log" | grep -v '^(Reading database' || true
check "dpkg -i of both packages" inside dpkg-query -W hoist hoist-agent
check "hoist-coordinator.service is enabled" inside systemctl is-enabled hoist-coordinator
check "hoist-agent.service is enabled" inside systemctl is-enabled hoist-agent
check "hoist-agent is not started without a coordinator in its config" \
    not inside systemctl is-active --quiet hoist-agent
check "postinst says how to start the agent" grep -q 'then run: systemctl start hoist-agent' <<<"$install_log"

# waitfor SECONDS COMMAND...: retries the command every half second until it succeeds.
waitfor() {
    local tries=$(($1 * 2))
    shift
    for _ in $(seq "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}
check "hoist-coordinator.service is active" waitfor 30 inside systemctl is-active --quiet hoist-coordinator
token_file=$machine/var/lib/hoist-coordinator/operator-token
check "the coordinator wrote its operator token" waitfor 30 test -s "$token_file"
[ -s "$token_file" ] || die "no operator token; the coordinator's log: $(inside journalctl -u hoist-coordinator --no-pager | tail -n 20)"
runs_as_hoist() { [ "$(inside ps -o user= -p "$(inside systemctl show -P MainPID hoist-coordinator)")" = hoist ]; }
check "the coordinator runs as user hoist" runs_as_hoist

# The packaged unit listens on 0.0.0.0 with no certificate configured: HTTPS with the
# certificate it generated in its data directory, trusted below by the CLI and the agent.
server=https://127.0.0.1:8443
cert=/var/lib/hoist-coordinator/tls/cert.pem
check "the coordinator generated its TLS certificate" waitfor 30 test -s "$machine$cert"
fingerprint_printed() {
    inside hoist server fingerprint --data-dir /var/lib/hoist-coordinator | grep -Eq '^([0-9A-F]{2}:){31}[0-9A-F]{2}$'
}
check "hoist server fingerprint prints its fingerprint" fingerprint_printed
# hoist ARGS...: the operator CLI inside the container.
hoist() {
    inside env HOIST_SERVER="$server" HOIST_CA_FILE="$cert" HOIST_TOKEN="$(cat "$token_file")" hoist "$@"
}
check "the coordinator answers on the container's loopback" waitfor 30 hoist app list

# --- configure and start the agent -----------------------------------------------------------

step "configure and start the agent"
registration_token=$(hoist token create) || die "hoist token create failed"
[ -n "$registration_token" ] || die "hoist token create printed no token"
pass "hoist token create printed a registration token"
# Short grace periods, so a restart stops the long hook within seconds.
cat >"$machine/etc/hoist/agent.yaml" <<EOF
coordinator:
  url: $server
  ca_file: $cert
  registration_token: "$registration_token"
host:
  tags:
    role: nspawn
state_dir: /var/lib/hoist
hooks:
  stop_grace_secs: 3
  kill_grace_secs: 2
EOF
chmod 600 "$machine/etc/hoist/agent.yaml"
inside systemctl start hoist-agent || { inside journalctl -u hoist-agent --no-pager | tail -n 20; die "systemctl start hoist-agent failed"; }
check "hoist-agent.service is active (Type=notify: READY=1 arrived)" inside systemctl is-active --quiet hoist-agent
host_listed() { hoist hosts list --json | jq -e --arg n "$machine_name" '[(.hosts // .)[] | select(.name == $n)] | length == 1'; }
check "the agent registered: hoist hosts list shows $machine_name" waitfor 30 host_listed
hoist hosts list || true
check "hoist-agent status exits 0 while the daemon runs" inside hoist-agent status
inside hoist-agent status || true

hoist app create nspawn-app >/dev/null || die "hoist app create failed"
hoist group create nspawn --app nspawn-app --tag role=nspawn >/dev/null || die "hoist group create failed"
revision=$(hoist push /root/bundle --app nspawn-app) || die "hoist push failed"
pass "hoist push: revision $revision"

# deploy_until_validating: creates a deployment, waits until its ValidateService hook runs;
# sets deployment, app_pid and hook_pid.
deploy_until_validating() {
    deployment=$(hoist deploy create --app nspawn-app --group nspawn --revision "$revision") \
        || die "hoist deploy create failed"
    echo "deployment $deployment"
    local hook_file=$machine/var/lib/nspawn-app/$deployment.validate.pid
    if ! waitfor 60 test -s "$hook_file"; then
        hoist deploy status "$deployment" || true
        die "ValidateService of $deployment did not start"
    fi
    app_pid=$(cat "$machine/var/lib/nspawn-app/$deployment.pid")
    hook_pid=$(cat "$hook_file")
    echo "app pid $app_pid (inside), ValidateService script pid $hook_pid (inside)"
}
alive() { inside kill -0 "$1"; }
# The control group of a process inside, as the container sees it.
cgroup_of() { inside cat "/proc/$1/cgroup" | awk -F: '$2 == "name=systemd" || $2 == "" { print $3; exit }'; }
# deployment_ended ID: the coordinator has a terminal state for it.
deployment_ended() {
    hoist deploy status "$1" --json | jq -e '.state | IN("succeeded", "failed", "stopped")'
}

# --- 1: systemctl restart during a long hook ------------------------------------------------

step "1: systemctl restart hoist-agent during ValidateService"
deploy_until_validating
first=$deployment
first_app=$app_pid
check "the app is alive before the restart" alive "$app_pid"
check "the file system ApplicationStart mounted is mounted for the whole container (PID 1 sees it)" \
    inside findmnt -n /mnt/nspawn-app
# same_mount_ns PID: the process shares PID 1's mount namespace.
same_mount_ns() { [ "$(inside readlink "/proc/$1/ns/mnt")" = "$(inside readlink /proc/1/ns/mnt)" ]; }
check "the agent shares PID 1's mount namespace" same_mount_ns "$(inside systemctl show -P MainPID hoist-agent)"
# The container itself has no CAP_SYS_MODULE or CAP_SYSLOG, so the loaded unit is checked.
bounding=$(inside systemctl show -P CapabilityBoundingSet hoist-agent)
check "the agent's bounding set has no cap_sys_module or cap_syslog" \
    not grep -qwE 'cap_sys_module|cap_syslog' <<<"$bounding"
keeps_caps() { grep -qw cap_sys_admin <<<"$bounding" && grep -qw cap_setuid <<<"$bounding"; }
check "the agent's bounding set keeps cap_sys_admin and cap_setuid" keeps_caps
app_cgroup=$(cgroup_of "$app_pid")
if [[ "$app_cgroup" == */hoist-agent.service ]]; then pass "the app runs in the agent unit's control group ($app_cgroup)"; else fail "the app's control group is $app_cgroup"; fi
agent_status=$(inside hoist-agent status 2>&1 || true)
echo "$agent_status"
check "hoist-agent status shows ValidateService in flight" grep -q "ValidateService" <<<"$agent_status"
old_pid=$(inside systemctl show -P MainPID hoist-agent)
t0=$(date +%s%N)
check "systemctl restart hoist-agent" inside systemctl restart hoist-agent
restarted_at=$(date +%s)
echo "systemctl restart took $((($(date +%s%N) - t0) / 1000000)) ms"
new_pid=$(inside systemctl show -P MainPID hoist-agent)
check "hoist-agent is active after the restart" inside systemctl is-active --quiet hoist-agent
check "the agent is a new process (MainPID $old_pid -> $new_pid)" test "$old_pid" != "$new_pid" -a "$new_pid" != 0
check "the restarted agent still shares PID 1's mount namespace" same_mount_ns "$new_pid"
check "the restarted agent sees the file system ApplicationStart mounted" \
    inside nsenter --target "$new_pid" --mount findmnt -n /mnt/nspawn-app
check "the app from ApplicationStart survived the restart (KillMode=process)" alive "$app_pid"
beat_since() { [ "$(cat "$machine/var/lib/nspawn-app/$1.beat")" -gt "$2" ]; }
check "the app still beats after the restart" waitfor 5 beat_since "$first" "$restarted_at"
check "the ValidateService script was stopped" not alive "$hook_pid"
check "the coordinator has the deployment's outcome" waitfor 30 deployment_ended "$first"
status=$(hoist deploy status "$first" || true)
echo "$status"
json=$(hoist deploy status "$first" --json)
# The host's command is stopped; the deployment fails, as a rollout does when fewer hosts
# than its minimum can still succeed (`hoist deploy stop` is what makes a deployment stopped).
check "the host's command is stopped" test "$(jq -r '.hosts[0].state' <<<"$json")" = stopped
check "the host stopped in ValidateService" test "$(jq -r '.hosts[0].failed_event' <<<"$json")" = ValidateService
check "deployment $first failed (its only host did not succeed)" test "$(jq -r .state <<<"$json")" = failed
check "the stop names the script and the agent shutting down" \
    grep -q "script scripts/validate.sh was stopped because the agent is shutting down" <<<"$status"

# --- 2: the agent killed during a long hook --------------------------------------------------

step "2: SIGKILL to the agent during ValidateService (a crash)"
deploy_until_validating
second=$deployment
restarts_before=$(inside systemctl show -P NRestarts hoist-agent)
old_pid=$(inside systemctl show -P MainPID hoist-agent)
inside systemctl kill --kill-who=main --signal=SIGKILL hoist-agent
echo "killed the agent (pid $old_pid inside); Restart=on-failure brings it back after RestartSec=5"
agent_back() {
    local pid
    pid=$(inside systemctl show -P MainPID hoist-agent)
    [ "$pid" != 0 ] && [ "$pid" != "$old_pid" ] && inside systemctl is-active --quiet hoist-agent
}
check "systemd restarted the agent" waitfor 30 agent_back
check "NRestarts went up" test "$(inside systemctl show -P NRestarts hoist-agent)" -gt "$restarts_before"
check "the orphaned ValidateService script was killed by the new agent" \
    waitfor 15 not alive "$hook_pid"
check "this deployment's app survived the crash and the recovery" alive "$app_pid"
check "the first deployment's app is still alive too" alive "$first_app"
check "the coordinator has the deployment's outcome" waitfor 30 deployment_ended "$second"
status=$(hoist deploy status "$second" || true)
echo "$status"
json=$(hoist deploy status "$second" --json)
check "the host's command failed in ValidateService" \
    test "$(jq -r '.hosts[0].state + " " + .hosts[0].failed_event' <<<"$json")" = "failed ValidateService"
check "deployment $second failed" test "$(jq -r .state <<<"$json")" = failed
check "hoist deploy status says \"agent restarted during ValidateService\"" \
    grep -q "agent restarted during ValidateService" <<<"$status"

# --- status and journal ---------------------------------------------------------------------

step "hoist-agent status"
agent_status_exit=0
agent_status=$(inside hoist-agent status 2>&1) || agent_status_exit=$?
echo "$agent_status"
check "hoist-agent status exits 0" test "$agent_status_exit" = 0
check "hoist-agent status shows the last deployment's failure" \
    grep -q "agent restarted during ValidateService" <<<"$agent_status"

step "structured journal fields"
journal=$(inside journalctl -o json -u hoist-agent --no-pager)
echo "$(wc -l <<<"$journal") entries for hoist-agent.service"
# entries DEPLOYMENT_ID [LIFECYCLE_EVENT]: how many entries carry all four deployment fields.
entries() {
    jq -c --arg d "$1" --arg e "${2:-}" 'select(.DEPLOYMENT_ID == $d
        and .APPLICATION == "nspawn-app" and .DEPLOYMENT_GROUP == "nspawn"
        and (.LIFECYCLE_EVENT != null) and ($e == "" or .LIFECYCLE_EVENT == $e))' <<<"$journal" | wc -l
}
for d in "$first" "$second"; do
    check "journal: $d has entries with DEPLOYMENT_ID, APPLICATION, DEPLOYMENT_GROUP, LIFECYCLE_EVENT" \
        test "$(entries "$d")" -gt 0
    check "journal: $d has ValidateService entries" test "$(entries "$d" ValidateService)" -gt 0
done
check "journal: the hook's output line carries the fields" test "$(jq -c --arg d "$first" \
    'select(.DEPLOYMENT_ID == $d and .LIFECYCLE_EVENT == "ValidateService" and (.MESSAGE | tostring | test("this takes a while")))' \
    <<<"$journal" | wc -l)" -gt 0
check "journal: SYSLOG_IDENTIFIER is hoist-agent" test "$(jq -c 'select(.DEPLOYMENT_ID != null and .SYSLOG_IDENTIFIER == "hoist-agent")' <<<"$journal" | wc -l)" -gt 0
echo "one entry (a line of the hook's output):"
jq -c --arg d "$first" 'select(.DEPLOYMENT_ID == $d and .LIFECYCLE_EVENT == "ValidateService" and .SCRIPT != null)
    | {MESSAGE, DEPLOYMENT_ID, APPLICATION, DEPLOYMENT_GROUP, LIFECYCLE_EVENT, SCRIPT, STREAM, _SYSTEMD_UNIT}' \
    <<<"$journal" | head -n 1

# --- sandbox exposure -----------------------------------------------------------------------

step "systemd-analyze security"
# The booted system analyses the loaded unit; --offline=true only the file. Where their
# tables differ, the differing rows are printed.
for unit in hoist-agent.service hoist-coordinator.service; do
    online_table=$(inside systemd-analyze security --no-pager "$unit" 2>&1 || true)
    offline_table=$(inside systemd-analyze security --no-pager --offline=true "/lib/systemd/system/$unit" 2>&1 || true)
    online=$(grep -o 'Overall exposure level.*' <<<"$online_table" || true)
    offline=$(grep -o 'Overall exposure level.*' <<<"$offline_table" || true)
    echo "$unit: booted:  ${online:-none}"
    echo "$unit: offline: ${offline:-none}"
    diff <(grep -v 'Overall exposure' <<<"$offline_table") <(grep -v 'Overall exposure' <<<"$online_table") \
        | sed -n 's/^</  offline:/p; s/^>/  booted: /p' || true
    if [ -n "$online" ]; then pass "$unit has an exposure score in the booted system"; else fail "$unit: no exposure score"; fi
done

[ "$failed" -eq 0 ]
