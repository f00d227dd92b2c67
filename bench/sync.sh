#!/usr/bin/env bash
# `ferry sync` against `git annex sync`: one new commit pushed to a local clone (and the
# git-annex branch merged and pushed), and a sync with 10 remotes of which 3 are offline against
# a sync with one. Prints RESULT lines and ratios; see bench/README.md.
set -euo pipefail
RUNS=${RUNS:-7}
SCRATCH_NAME=sync
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
echo "# sync benchmark $(date -u +%Y-%m-%dT%H:%MZ); $(git --version); git-annex $(git annex version --raw 2>/dev/null); RUNS=$RUNS"

pair() { # kind -> makes $WORK/<kind>-a and its clone $WORK/<kind>-b, with 100 files committed
    local k=$1
    mkdir -p "$WORK/$k-a"; cd "$WORK/$k-a"; git init -q
    if [[ $k == ferry ]]; then "$FERRY" init a >/dev/null; else git annex init -q a; fi
    for i in $(seq 100); do echo "file $i" >"f$i"; done
    if [[ $k == ferry ]]; then "$FERRY" add -q .; else git annex add -q .; fi
    git commit -q -m base
    cd "$WORK"; git clone -q "$k-a" "$k-b"; cd "$k-b"
    if [[ $k == ferry ]]; then "$FERRY" init b >/dev/null; "$FERRY" sync >/dev/null; else git annex init -q b; git annex sync -q; fi
    cd "$WORK"
}
pair ferry; pair annex

one_sync() { # kind run -> seconds for a sync that pushes one new commit
    local k=$1 r=$2 t0 t1
    cd "$WORK/$k-b"
    echo "change $r" >"new-$r"
    if [[ $k == ferry ]]; then "$FERRY" add -q "new-$r"; else git annex add -q "new-$r"; fi
    git commit -q -m "new $r"
    t0=$(now)
    if [[ $k == ferry ]]; then "$FERRY" sync >/dev/null; else git annex sync -q >/dev/null 2>&1; fi
    t1=$(now)
    [[ $(git -C "$WORK/$k-a" rev-parse refs/heads/synced/master 2>/dev/null || git -C "$WORK/$k-a" rev-parse refs/heads/synced/main) == $(git rev-parse HEAD) ]] \
        || echo "CHECK ${k}_pushed=FAIL (run $r)"
    cd "$WORK"
    secs "$t0" "$t1"
}
f=() a=()
for ((r = 1; r <= RUNS; r++)); do
    if ((r % 2)); then f+=("$(one_sync ferry "$r")"); a+=("$(one_sync annex "$r")"); else a+=("$(one_sync annex "$r")"); f+=("$(one_sync ferry "$r")"); fi
done
F=$(printf '%s\n' "${f[@]}" | median); A=$(printf '%s\n' "${a[@]}" | median)
echo "RESULT sync_one_commit_ferry=$F s (samples ${f[*]})"
echo "RESULT sync_one_commit_annex=$A s (samples ${a[*]})"
echo "RESULT sync_annex_over_ferry=$(ratio "$A" "$F")x (target >= 3)"

# 10 remotes, 3 of them offline (paths that do not exist), against 1 remote. Each sync carries
# one new commit to every remote it reaches: the one-remote case is a separate pair (solo-b, a
# clone of solo-a), so that neither sync finds the other's commits to carry.
cd "$WORK/ferry-b"
for i in $(seq 7); do git clone -q "$WORK/ferry-a" "$WORK/peer$i"; (cd "$WORK/peer$i" && "$FERRY" init "peer$i" >/dev/null); git remote add "peer$i" "$WORK/peer$i"; done
for i in 1 2 3; do git remote add "offline$i" "$WORK/unplugged$i"; done
"$FERRY" sync >/dev/null
git clone -q "$WORK/ferry-a" "$WORK/solo-a"; (cd "$WORK/solo-a" && "$FERRY" init solo-a >/dev/null)
git clone -q "$WORK/solo-a" "$WORK/solo-b"; (cd "$WORK/solo-b" && "$FERRY" init solo-b >/dev/null && "$FERRY" sync >/dev/null)
ten=() one=()
for ((r = 1; r <= RUNS; r++)); do
    cd "$WORK/ferry-b"
    echo "x $r" >"ten-$r"; "$FERRY" add -q "ten-$r"; git commit -q -m "ten $r"
    t0=$(now); "$FERRY" sync >/dev/null; t1=$(now); ten+=("$(secs "$t0" "$t1")")
    [[ $(git -C "$WORK/peer7" rev-parse refs/heads/synced/master) == $(git rev-parse HEAD) ]] || echo "CHECK ten_pushed=FAIL (run $r)"
    cd "$WORK/solo-b"
    echo "y $r" >"one-$r"; "$FERRY" add -q "one-$r"; git commit -q -m "one $r"
    t0=$(now); "$FERRY" sync >/dev/null; t1=$(now); one+=("$(secs "$t0" "$t1")")
    [[ $(git -C "$WORK/solo-a" rev-parse refs/heads/synced/master) == $(git rev-parse HEAD) ]] || echo "CHECK one_pushed=FAIL (run $r)"
done
T=$(printf '%s\n' "${ten[@]}" | median); O=$(printf '%s\n' "${one[@]}" | median)
echo "RESULT sync_10_remotes_3_offline=$T s (samples ${ten[*]})"
echo "RESULT sync_1_remote=$O s (samples ${one[*]})"
echo "RESULT sync_10_over_1=$(ratio "$T" "$O")x (about 1 means parallel; 8 would be serial)"
