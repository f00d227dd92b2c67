#!/usr/bin/env bash
# Sync with remotes far away: 10 remotes over ssh, of which 3 are offline, against one, with
# every byte delayed DELAY_MS each way (a server DELAY_MS*2 ms round trip away; each remote a
# host of its own, or with SAME_HOST=1 all on one host). `ferry sync`
# fetches and pushes all remotes at once, so it should take about as long as one remote;
# `git annex sync` (the anchor) goes through them one after another. A real sshd on loopback,
# started here, serves bare repositories; bench/delay_proxy.py sits in front of it, one port per
# remote (one "host" each). Prints RESULT lines and ratios; see bench/README.md.
set -euo pipefail
RUNS=${RUNS:-5}
DELAY_MS=${DELAY_MS:-25}
# 1: the 7 reachable remotes are repositories on one host (one proxy port, one ssh connection).
SAME_HOST=${SAME_HOST:-0}
SCRATCH_NAME=syncfar
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
for tool in /usr/sbin/sshd ssh-keygen python3; do
    command -v "$tool" >/dev/null || { echo "sync-far.sh needs $tool (apt-get install openssh-server python3)"; exit 1; }
done
echo "# sync-far benchmark $(date -u +%Y-%m-%dT%H:%MZ); $(git --version); git-annex $(git annex version --raw 2>/dev/null); RUNS=$RUNS DELAY_MS=$DELAY_MS SAME_HOST=$SAME_HOST"

PIDS=()
# The server side runs as a user of its own, with /bin/sh as its shell: sshd runs every git
# command through the user's shell, and root's interactive set-up here (pyenv in .bashrc, which
# bash reads under sshd) costs about 100 ms of CPU per session, which would hide what is
# measured. The user is made here (as root) and removed at the end.
SRV_USER=ferrybench
MADE_USER=
if ! id "$SRV_USER" >/dev/null 2>&1; then
    # (A password of '*': no password login, but not a locked account, which sshd refuses.)
    useradd -r -M -p '*' -s /bin/sh -d "$WORK/srvhome" "$SRV_USER"
    MADE_USER=1
fi
cleanup() {
    if [[ -n ${KEEP:-} ]]; then echo "kept $WORK; processes ${PIDS[*]}"; return; fi
    # The proxy first: the ssh connections through it (and their persisted masters) end with it.
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pkill -u "$SRV_USER" 2>/dev/null || true
    [[ -n $MADE_USER ]] && userdel "$SRV_USER" 2>/dev/null
    chmod -R u+w "$WORK" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

free_ports() { # n -> n free TCP ports on 127.0.0.1
    python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
read -r -a PORTS <<<"$(free_ports 17)"
SSHD_PORT=${PORTS[0]}

# The server.
S=$WORK/sshd
mkdir -p "$S" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$S/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$S/client_key"
cp "$S/client_key.pub" "$S/authorized_keys"
cat >"$S/config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $S/host_key
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxSessions 100
MaxStartups 100
EOF
/usr/sbin/sshd -D -f "$S/config" -E "$S/log" </dev/null &
PIDS+=($!)
# The distance: one proxy port per remote.
python3 "$ROOT/bench/delay_proxy.py" "$DELAY_MS" "$SSHD_PORT" "${PORTS[@]:1}" >"$S/proxy.out" 2>&1 &
PIDS=("$!" "${PIDS[@]}")
for _ in $(seq 100); do
    grep -q ready "$S/proxy.out" 2>/dev/null && python3 -c "import socket; socket.create_connection(('127.0.0.1', $SSHD_PORT)).close()" 2>/dev/null && break
    sleep 0.1
done
export GIT_SSH_COMMAND="ssh -i $S/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
url() { echo "ssh://$SRV_USER@127.0.0.1:${PORTS[$1]}$2"; }

# For each kind: a first clone with 100 files, a bare copy of it per remote on the server, and
# two clients: `many` with 7 of those remotes plus 3 offline ones, `one` with a single remote.
setup() { # kind (ferry|annex) port-offset
    local k=$1 o=$2 i
    mkdir -p "$WORK/$k-a" "$WORK/srv"; cd "$WORK/$k-a"; git init -q
    if [[ $k == ferry ]]; then "$FERRY" init a >/dev/null; else git annex init -q a; fi
    for i in $(seq 100); do echo "file $i" >"f$i"; done
    if [[ $k == ferry ]]; then "$FERRY" add -q .; else git annex add -q .; fi
    git commit -q -m base
    for c in many one; do
        git clone -q "$WORK/$k-a" "$WORK/$k-$c"
        (cd "$WORK/$k-$c" && git remote remove origin && if [[ $k == ferry ]]; then "$FERRY" init "$c" >/dev/null; else git annex init -q "$c"; fi)
    done
    for i in $(seq 8); do git clone -q --bare "$WORK/$k-a" "$WORK/srv/$k-$i.git"; done
    cd "$WORK/$k-many"
    for i in $(seq 7); do
        local p=$((o + i))
        ((SAME_HOST)) && p=$((o + 1))
        git remote add "far$i" "$(url "$p" "$WORK/srv/$k-$i.git")"
    done
    for i in 1 2 3; do git remote add "offline$i" "$WORK/unplugged$i"; done
    git -C "$WORK/$k-one" remote add far8 "$(url $((o + 8)) "$WORK/srv/$k-8.git")"
}
setup ferry 0
setup annex 8
mkdir -p "$WORK/srvhome"
chown -R "$SRV_USER" "$WORK/srv" "$WORK/srvhome"
chmod 755 "$WORK"

do_sync() { # kind dir
    cd "$2"
    if [[ $1 == ferry ]]; then "$FERRY" sync >"$WORK/last.log" 2>&1 || true; else git annex sync -q >"$WORK/last.log" 2>&1 || true; fi
}
# Warm-up: the first sync opens the connections (ferry keeps them for a minute: ControlPersist).
for k in ferry annex; do for c in many one; do do_sync "$k" "$WORK/$k-$c"; done; done

timed() { # kind client run -> seconds for a sync that carries one new commit everywhere
    local k=$1 c=$2 r=$3 t0 t1 last
    cd "$WORK/$k-$c"
    echo "$c $r" >"new-$r"
    if [[ $k == ferry ]]; then "$FERRY" add -q "new-$r"; else git annex add -q "new-$r"; fi
    git commit -q -m "new $r"
    t0=$(now); do_sync "$k" "$WORK/$k-$c"; t1=$(now)
    if [[ $c == many ]]; then last=$WORK/srv/$k-7.git; else last=$WORK/srv/$k-8.git; fi
    [[ $(git -c safe.directory='*' -C "$last" rev-parse refs/heads/synced/master 2>/dev/null) == $(git -C "$WORK/$k-$c" rev-parse HEAD) ]] \
        || { echo "CHECK ${k}_${c}_pushed=FAIL (run $r)"; sed 's/^/  /' "$WORK/last.log"; } >&2
    secs "$t0" "$t1"
}
declare -A T
for ((r = 1; r <= RUNS; r++)); do
    for k in ferry annex; do
        for c in many one; do T[$k-$c]+="$(timed "$k" "$c" "$r") "; done
    done
done
for k in ferry annex; do
    M=$(printf '%s\n' ${T[$k-many]} | median); O=$(printf '%s\n' ${T[$k-one]} | median)
    echo "RESULT sync_far_${k}_10_remotes_3_offline=$M s (samples ${T[$k-many]})"
    echo "RESULT sync_far_${k}_1_remote=$O s (samples ${T[$k-one]})"
    echo "RESULT sync_far_${k}_10_over_1=$(ratio "$M" "$O")x (1 means all at once; 7 means one after another)"
done
FM=$(printf '%s\n' ${T[ferry-many]} | median); AM=$(printf '%s\n' ${T[annex-many]} | median)
echo "RESULT sync_far_10_remotes_annex_over_ferry=$(ratio "$AM" "$FM")x"
