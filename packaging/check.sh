#!/usr/bin/env bash
# Checks the packages that packaging/build.sh wrote, on this machine, as root: installs both
# .debs, checks files, modes, conffiles and metadata, shell completions and man pages (`man
# hoist`), runs the installed binaries, runs the
# maintainer scripts' systemd branches against a recording `systemctl` in a private mount
# namespace, verifies the installed systemd units (any output from `systemd-analyze verify`
# fails), prints their `systemd-analyze security` exposure, inspects both .rpms and installs
# them into a sandbox root, then removes and purges the .debs and checks what is left.
#
# Every check prints "ok: ..." or "FAIL: ..."; the script ends with "N passed, N failed" and
# exits non-zero when any check failed. It undoes what it did (packages, sandbox root, the
# `hoist` user when it created it) on every exit.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
out=$target_dir/packages
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: runs the command quietly, counts the result.
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}
step() { echo; echo "=== $* ==="; }
die() { echo "check.sh: $*" >&2; exit 2; }

# mode_is PATH MODE OWNER:GROUP
mode_is() { [ "$(stat -c '%a %U:%G' "$1" 2>/dev/null)" = "$2 $3" ]; }
# Known to dpkg: installed, or removed with its config files left.
is_known() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) && [ -n "$status" ] \
        && [ "${status%not-installed}" = "$status" ]
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages)"

# Exactly one package file of each kind.
one() {
    local matches=("$out"/$1)
    [ "${#matches[@]}" -eq 1 ] && [ -f "${matches[0]}" ] || die "expected one $1 in $out (run packaging/build.sh first)"
    echo "${matches[0]}"
}
agent_deb=$(one 'hoist-agent_*.deb') || exit 2
hoist_deb=$(one 'hoist_*.deb') || exit 2
agent_rpm=$(one 'hoist-agent-[0-9]*.rpm') || exit 2
hoist_rpm=$(one 'hoist-[0-9]*.rpm') || exit 2

for pkg in hoist-agent hoist; do
    if is_known "$pkg"; then
        echo "purging $pkg left installed by an earlier run"
        dpkg --purge "$pkg" >/dev/null || die "cannot purge $pkg"
    fi
done
for dir in /var/lib/hoist /var/lib/hoist-coordinator; do
    [ -e "$dir" ] && die "$dir exists outside the packages; move it away before checking (a purge would delete it)"
done

user_existed=no
getent passwd hoist >/dev/null && user_existed=yes
scratch=$(mktemp -d /tmp/hoist-pkg-check.XXXXXX)

cleanup() {
    for pkg in hoist-agent hoist; do
        is_known "$pkg" && dpkg --purge "$pkg" >/dev/null 2>&1
    done
    if [ "$user_existed" = no ] && getent passwd hoist >/dev/null; then
        userdel hoist >/dev/null 2>&1
        getent group hoist >/dev/null && groupdel hoist >/dev/null 2>&1
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

step "install the .debs"
check "dpkg -i $(basename "$agent_deb")" dpkg -i "$agent_deb"
check "dpkg -i $(basename "$hoist_deb")" dpkg -i "$hoist_deb"
check "reinstalling (the upgrade path of the maintainer scripts) succeeds" \
    dpkg -i "$agent_deb" "$hoist_deb"

step "installed files"
check "/usr/bin/hoist-agent 0755 root" mode_is /usr/bin/hoist-agent 755 root:root
check "/usr/bin/hoist 0755 root" mode_is /usr/bin/hoist 755 root:root
check "/etc/hoist/agent.yaml 0600 root" mode_is /etc/hoist/agent.yaml 600 root:root
check "/var/lib/hoist 0755 root" mode_is /var/lib/hoist 755 root:root
check "/lib/systemd/system/hoist-agent.service 0644" mode_is /lib/systemd/system/hoist-agent.service 644 root:root
check "/lib/systemd/system/hoist-coordinator.service 0644" \
    mode_is /lib/systemd/system/hoist-coordinator.service 644 root:root
check "installed units are the ones in systemd/" \
    cmp /lib/systemd/system/hoist-agent.service systemd/hoist-agent.service
check "installed default config is packaging/agent.yaml" cmp /etc/hoist/agent.yaml packaging/agent.yaml
for pkg in hoist-agent hoist; do
    check "$pkg: README and copyright in /usr/share/doc/$pkg" \
        test -s "/usr/share/doc/$pkg/README.md" -a -s "/usr/share/doc/$pkg/copyright"
done
check "the two-replica example is the one in examples/replicas/" \
    cmp /usr/share/doc/hoist/examples/replicas/coordinator.yaml examples/replicas/coordinator.yaml
check "/etc/hoist/agent.yaml is a conffile" \
    sh -c "dpkg-query -W -f='\${Conffiles}' hoist-agent | grep -q '^ /etc/hoist/agent.yaml '"
check "hoist-agent Recommends: git, acl" \
    sh -c "dpkg-query -W -f='\${Recommends}' hoist-agent | grep -qx 'git, acl'"
check "hoist-agent Depends on libc6" sh -c "dpkg-query -W -f='\${Depends}' hoist-agent | grep -q libc6"
check "system user hoist exists" getent passwd hoist
check "/var/lib/hoist-coordinator 0700 hoist" mode_is /var/lib/hoist-coordinator 700 hoist:hoist

step "installed binaries"
check "hoist-agent --version names itself" sh -c "/usr/bin/hoist-agent --version | grep -q '^hoist-agent '"
/usr/bin/hoist-agent --version
check "hoist-agent validate examples/web-app" /usr/bin/hoist-agent validate "$root/examples/web-app"
check "hoist --version" /usr/bin/hoist --version
# `status` exits 2 on a config it cannot use and 3 when the daemon does not run.
status_exit() {
    /usr/bin/hoist-agent status --config "$1" --state-dir "$scratch/no-state" >/dev/null 2>&1
    echo $?
}
check "the installed default config is accepted" test "$(status_exit /etc/hoist/agent.yaml)" = 3
# Every commented key uncommented at once (one of the two token keys and one of url/urls
# only) must parse too.
sed -e '/registration_token_file:/d' -e '/^#  urls:/d' -e 's/^#\([a-z0-9_]*:\)/\1/' -e 's/^#\(  \)/\1/' \
    packaging/agent.yaml >"$scratch/all-keys.yaml"
check "packaging/agent.yaml with every key uncommented is accepted" \
    test "$(status_exit "$scratch/all-keys.yaml")" = 3
check "an unknown key is still rejected (the check above can fail)" \
    sh -c "printf 'colour: blue\n' >'$scratch/bad.yaml' && test \"\$(/usr/bin/hoist-agent status --config '$scratch/bad.yaml' --state-dir '$scratch/no-state' >/dev/null 2>&1; echo \$?)\" = 2"

step "shell completions and man pages"
for bin in hoist-agent hoist; do
    check "$bin: bash completion in /usr/share/bash-completion/completions/$bin" \
        test -s "/usr/share/bash-completion/completions/$bin"
    check "$bin: zsh completion in /usr/share/zsh/vendor-completions/_$bin" \
        test -s "/usr/share/zsh/vendor-completions/_$bin"
    check "$bin: fish completion in /usr/share/fish/vendor_completions.d/$bin.fish" \
        test -s "/usr/share/fish/vendor_completions.d/$bin.fish"
    check "$bin: man page /usr/share/man/man1/$bin.1.gz" test -s "/usr/share/man/man1/$bin.1.gz"
done
check "a man page per subcommand (hoist-deploy-create.1.gz, hoist-agent-deploy.1.gz)" \
    test -s /usr/share/man/man1/hoist-deploy-create.1.gz -a -s /usr/share/man/man1/hoist-agent-deploy.1.gz
check "no man page for the hidden generate subcommand (hoist key generate has one)" \
    sh -c '! ls /usr/share/man/man1/hoist-generate*.1.gz /usr/share/man/man1/hoist-agent-generate*.1.gz 2>/dev/null | grep -q . && test -s /usr/share/man/man1/hoist-key-generate.1.gz'
if command -v man >/dev/null 2>&1; then
    check "man -w hoist finds /usr/share/man/man1/hoist.1.gz" \
        sh -c '[ "$(man -w hoist)" = /usr/share/man/man1/hoist.1.gz ]'
    check "man -w hoist-agent finds /usr/share/man/man1/hoist-agent.1.gz" \
        sh -c '[ "$(man -w hoist-agent)" = /usr/share/man/man1/hoist-agent.1.gz ]'
    check "man hoist renders the page" sh -c 'man -P cat hoist 2>/dev/null | grep -q "Hoist coordinator and operator CLI"'
else
    fail "man is not installed (man-db): cannot check that \`man hoist\` works"
fi
# The installed bash completion completes a subcommand and an option.
check "bash completes 'hoist gr' to group" bash -c \
    'source /usr/share/bash-completion/completions/hoist && COMP_WORDS=(hoist gr) COMP_CWORD=1 && _hoist hoist gr hoist && [ "${COMPREPLY[*]}" = group ]'
check "bash completes 'hoist-agent deploy --bu' to --bundle" bash -c \
    'source /usr/share/bash-completion/completions/hoist-agent && COMP_WORDS=(hoist-agent deploy --bu) COMP_CWORD=2 && _hoist__agent hoist-agent --bu deploy && [ "${COMPREPLY[*]}" = --bundle ]'

step "maintainer scripts under a simulated systemd"
# Each case runs one maintainer script in a private mount namespace where /run/systemd/system
# exists (so the scripts believe systemd runs), /etc/hoist and /var/lib/hoist are scratch
# tmpfs mounts, and `systemctl` is a stand-in that records its arguments; is-active answers
# from FAKE_ACTIVE. The host's own systemd state is never touched.
mkdir -p "$scratch/bin"
cat >"$scratch/bin/systemctl" <<'FAKE'
#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
[ "$1" = is-active ] && exit "${FAKE_ACTIVE:-3}"
exit 0
FAKE
cat >"$scratch/harness.sh" <<'HARNESS'
#!/bin/sh
# harness.sh SYSTEMD(yes|no) CONFIG IN_FLIGHT(path|none) SCRIPT ARGS...
set -e
mount -t tmpfs tmpfs /run/systemd
[ "$1" = yes ] && mkdir /run/systemd/system
mount -t tmpfs tmpfs /etc/hoist
cp "$2" /etc/hoist/agent.yaml
mount -t tmpfs tmpfs /var/lib/hoist
if [ "$3" != none ]; then mkdir -p "$(dirname "$3")"; echo '{}' >"$3"; fi
shift 3
exec "$@"
HARNESS
chmod 755 "$scratch/bin/systemctl" "$scratch/harness.sh"
printf 'state_dir: /var/lib/hoist\n' >"$scratch/plain.yaml"
printf 'coordinator:\n  url: https://c.example:8443\nstate_dir: /var/lib/hoist\n' >"$scratch/registered.yaml"
printf "state_dir: '/var/lib/hoist/elsewhere'  # moved\n" >"$scratch/moved.yaml"
# script_case NAME SYSTEMD CONFIG IN_FLIGHT ACTIVE EXPECTED_CALLS EXPECTED_OUTPUT SCRIPT ARGS...
script_case() {
    local name=$1 systemd=$2 config=$3 in_flight=$4 active=$5 want_calls=$6 want_output=$7
    shift 7
    local log=$scratch/systemctl.log output calls
    : >"$log"
    output=$(SYSTEMCTL_LOG=$log FAKE_ACTIVE=$active PATH="$scratch/bin:$PATH" \
        unshare --mount --propagation private "$scratch/harness.sh" "$systemd" "$scratch/$config" \
        "$in_flight" "$@" 2>&1)
    local status=$?
    calls=$(paste -sd ';' "$log")
    if [ $status -ne 0 ]; then
        fail "$name: exit $status: $output"
    elif [ "$calls" != "$want_calls" ]; then
        fail "$name: systemctl calls [$calls], want [$want_calls]"
    elif [ -n "$want_output" ] && ! grep -q "$want_output" <<<"$output"; then
        fail "$name: output lacks \"$want_output\": $output"
    elif [ -z "$want_output" ] && [ -n "$output" ]; then
        fail "$name: unexpected output: $output"
    else
        ok "$name"
    fi
}
deb=packaging/debian/hoist-agent
rpm=packaging/rpm
unit=hoist-agent.service
check "the packaged maintainer scripts are the ones in $deb" sh -c \
    "dpkg-deb -e '$agent_deb' '$scratch/control' && cmp '$scratch/control/postinst' $deb/postinst && cmp '$scratch/control/prerm' $deb/prerm && cmp '$scratch/control/postrm' $deb/postrm"
script_case "deb install, no coordinator yet: enable, do not start" yes plain.yaml none 3 \
    "daemon-reload;enable $unit" "then run: systemctl start hoist-agent" $deb/postinst configure ""
script_case "deb install, coordinator configured: enable and start" yes registered.yaml none 3 \
    "daemon-reload;enable $unit;start $unit" "" $deb/postinst configure ""
script_case "deb upgrade, agent idle: restart" yes plain.yaml none 0 \
    "daemon-reload;is-active --quiet $unit;restart $unit" "" $deb/postinst configure 0.0.1
script_case "deb upgrade, deployment in flight: no restart, says so" yes plain.yaml \
    /var/lib/hoist/in-flight.json 0 "daemon-reload;is-active --quiet $unit" \
    "takes effect at the next restart" $deb/postinst configure 0.0.1
script_case "deb upgrade, deployment in flight (in-flight.log): no restart, says so" yes plain.yaml \
    /var/lib/hoist/in-flight.log 0 "daemon-reload;is-active --quiet $unit" \
    "takes effect at the next restart" $deb/postinst configure 0.0.1
script_case "deb upgrade, in flight under a configured state_dir: no restart" yes moved.yaml \
    /var/lib/hoist/elsewhere/in-flight.json 0 "daemon-reload;is-active --quiet $unit" \
    "takes effect at the next restart" $deb/postinst configure 0.0.1
script_case "deb upgrade, agent stopped: stays stopped" yes plain.yaml none 3 \
    "daemon-reload;is-active --quiet $unit" "" $deb/postinst configure 0.0.1
script_case "deb install without systemd: no systemctl call" no registered.yaml none 3 \
    "" "" $deb/postinst configure ""
script_case "deb remove: stop and disable" yes plain.yaml none 0 \
    "stop $unit;disable $unit" "" $deb/prerm remove
script_case "deb upgrade: prerm leaves the agent running" yes plain.yaml none 0 \
    "" "" $deb/prerm upgrade 0.2.0
script_case "rpm install: enable, do not start without a coordinator" yes plain.yaml none 3 \
    "daemon-reload;enable $unit" "then run: systemctl start hoist-agent" sh $rpm/hoist-agent.post.sh 1
script_case "rpm upgrade: post does not restart" yes plain.yaml none 0 \
    "daemon-reload" "" sh $rpm/hoist-agent.post.sh 2
script_case "rpm upgrade, agent idle: postun restarts" yes plain.yaml none 0 \
    "daemon-reload;is-active --quiet $unit;restart $unit" "" sh $rpm/hoist-agent.postun.sh 1
script_case "rpm upgrade, deployment in flight: no restart" yes plain.yaml \
    /var/lib/hoist/in-flight.json 0 "daemon-reload;is-active --quiet $unit" \
    "takes effect at the next restart" sh $rpm/hoist-agent.postun.sh 1
script_case "rpm upgrade, deployment in flight (in-flight.log): no restart" yes plain.yaml \
    /var/lib/hoist/in-flight.log 0 "daemon-reload;is-active --quiet $unit" \
    "takes effect at the next restart" sh $rpm/hoist-agent.postun.sh 1
script_case "rpm remove: stop and disable" yes plain.yaml none 0 \
    "stop $unit;disable $unit" "" sh $rpm/hoist-agent.preun.sh 0
script_case "rpm upgrade: preun leaves the agent running" yes plain.yaml none 0 \
    "" "" sh $rpm/hoist-agent.preun.sh 1
script_case "rpm remove: postun only reloads" yes plain.yaml none 3 \
    "daemon-reload" "" sh $rpm/hoist-agent.postun.sh 0

step "systemd units"
for unit in hoist-agent.service hoist-coordinator.service; do
    output=$(systemd-analyze verify "/lib/systemd/system/$unit" 2>&1)
    status=$?
    if [ $status -eq 0 ] && [ -z "$output" ]; then
        ok "systemd-analyze verify $unit is silent"
    else
        fail "systemd-analyze verify $unit (exit $status): $output"
    fi
done
for unit in hoist-agent.service hoist-coordinator.service; do
    score=$(systemd-analyze security --offline=true "/lib/systemd/system/$unit" 2>&1 | grep 'Overall exposure level')
    if [ -n "$score" ]; then ok "exposure $score"; else fail "systemd-analyze security $unit printed no score"; fi
done

step "rpm packages"
if ! command -v rpm >/dev/null 2>&1; then
    apt-get install -y -qq rpm >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq rpm >/dev/null; } || die "cannot install rpm"
fi
# Output is captured first: `grep -q` closing the pipe early would fail the pipeline.
rpm_lists() {
    local list
    list=$(rpm -qpl "$1" 2>/dev/null) && grep -qx "$2" <<<"$list"
}
for f in /usr/bin/hoist-agent /usr/lib/systemd/system/hoist-agent.service /etc/hoist/agent.yaml \
    /usr/share/doc/hoist-agent/README.md; do
    check "$(basename "$agent_rpm") lists $f" rpm_lists "$agent_rpm" "$f"
done
for f in /usr/bin/hoist /usr/lib/systemd/system/hoist-coordinator.service /usr/share/doc/hoist/README.md \
    /usr/share/doc/hoist/examples/replicas/coordinator.yaml; do
    check "$(basename "$hoist_rpm") lists $f" rpm_lists "$hoist_rpm" "$f"
done
# Completions and man pages where RHEL-family systems look for them (zsh: site-functions).
for pair in "hoist-agent:$agent_rpm" "hoist:$hoist_rpm"; do
    bin=${pair%%:*}
    file=${pair#*:}
    for f in "/usr/share/bash-completion/completions/$bin" "/usr/share/zsh/site-functions/_$bin" \
        "/usr/share/fish/vendor_completions.d/$bin.fish" "/usr/share/man/man1/$bin.1.gz"; do
        check "$(basename "$file") lists $f" rpm_lists "$file" "$f"
    done
done
check "$(basename "$hoist_rpm") lists a man page per subcommand" \
    rpm_lists "$hoist_rpm" /usr/share/man/man1/hoist-deploy-create.1.gz
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$agent_rpm" 2>/dev/null)
check "hoist-agent rpm: /etc/hoist/agent.yaml is %config(noreplace)" grep -qx '/etc/hoist/agent.yaml cn' <<<"$flags"
recommends=$(rpm -qp --recommends "$agent_rpm" 2>/dev/null)
check "hoist-agent rpm recommends git" grep -q '^git' <<<"$recommends"
check "hoist-agent rpm recommends acl" grep -q '^acl' <<<"$recommends"
for rpmfile in "$agent_rpm" "$hoist_rpm"; do
    echo "--- rpm -qpl $(basename "$rpmfile")"
    rpm -qpl "$rpmfile"
    echo "--- rpm -qp --scripts $(basename "$rpmfile")"
    rpm -qp --scripts "$rpmfile" | tee "$scratch/scripts"
    check "$(basename "$rpmfile") has postinstall, preuninstall and postuninstall scriptlets" \
        sh -c "grep -q '^postinstall scriptlet' '$scratch/scripts' && grep -q '^preuninstall scriptlet' '$scratch/scripts' && grep -q '^postuninstall scriptlet' '$scratch/scripts'"
done
sandbox=$scratch/rpm-root
mkdir -p "$sandbox"
check "rpm --initdb in a sandbox root" rpm --root "$sandbox" --initdb
check "rpm -i both packages into the sandbox root" \
    rpm --root "$sandbox" -i --nodeps --noscripts "$agent_rpm" "$hoist_rpm"
check "sandbox: /usr/bin/hoist-agent 0755" mode_is "$sandbox/usr/bin/hoist-agent" 755 root:root
check "sandbox: /usr/bin/hoist 0755" mode_is "$sandbox/usr/bin/hoist" 755 root:root
check "sandbox: /etc/hoist/agent.yaml 0600" mode_is "$sandbox/etc/hoist/agent.yaml" 600 root:root
check "sandbox: hoist-agent.service" test -s "$sandbox/usr/lib/systemd/system/hoist-agent.service"
check "sandbox: hoist-coordinator.service" test -s "$sandbox/usr/lib/systemd/system/hoist-coordinator.service"
check "sandbox: the rpm binary runs" "$sandbox/usr/bin/hoist-agent" --version
check "sandbox: man page hoist.1.gz is gzip'd roff" \
    sh -c "gzip -dc '$sandbox/usr/share/man/man1/hoist.1.gz' | grep -q '^.TH hoist 1'"
check "sandbox: bash completion for hoist-agent" \
    test -s "$sandbox/usr/share/bash-completion/completions/hoist-agent"

step "remove, then purge"
check "dpkg --remove both" dpkg --remove hoist-agent hoist
check "removal keeps /etc/hoist/agent.yaml" test -f /etc/hoist/agent.yaml
check "removal keeps /var/lib/hoist" test -d /var/lib/hoist
check "removal keeps /var/lib/hoist-coordinator" test -d /var/lib/hoist-coordinator
check "removal takes /usr/bin/hoist-agent" test ! -e /usr/bin/hoist-agent
check "removal takes the units" \
    test ! -e /lib/systemd/system/hoist-agent.service -a ! -e /lib/systemd/system/hoist-coordinator.service
check "dpkg --purge both" dpkg --purge hoist-agent hoist
for gone in /etc/hoist/agent.yaml /etc/hoist /var/lib/hoist /var/lib/hoist-coordinator \
    /usr/bin/hoist-agent /usr/bin/hoist /lib/systemd/system/hoist-agent.service \
    /lib/systemd/system/hoist-coordinator.service /usr/share/doc/hoist-agent /usr/share/doc/hoist \
    /usr/share/man/man1/hoist.1.gz /usr/share/man/man1/hoist-agent.1.gz \
    /usr/share/bash-completion/completions/hoist /usr/share/bash-completion/completions/hoist-agent \
    /etc/systemd/system/multi-user.target.wants/hoist-agent.service; do
    check "purge leaves no $gone" test ! -e "$gone"
done
for pkg in hoist-agent hoist; do
    if is_known "$pkg"; then fail "dpkg still knows $pkg after the purge"; else ok "dpkg no longer knows $pkg"; fi
done

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
