#!/usr/bin/env bash
# Re-planning after a preferred-content change in a large repository, with the assistant
# running: `ferry wanted here EXPR` commits the new expression; the daemon notices its
# git-annex branch move and plans every annexed file again from its file cache (no listing of
# the tree). The daemon logs how long that took. Anchor, in the same run: `git annex find
# --want-get` over the same tree, git-annex evaluating the same expression for every file.
#
#   N=100000   annexed files (10 bytes each)
#   RUNS=3     expression changes measured
# Then a restart after one new commit: planning from the checkpoint against the first start.
set -euo pipefail
SCRATCH_NAME=replan
source "$(dirname "$0")/lib.sh"
N=${N:-100000}
RUNS=${RUNS:-3}

A=$WORK/a
mkdir -p "$A"
cd "$A"
git init -q -b main
"$FERRY" init a >/dev/null
python3 - "$N" <<'PY'
import os, sys
n = int(sys.argv[1])
for i in range(n):
    d = f"d{i // 1000:03d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.txt", "w") as f:
        f.write(f"{i:09d}\n")
PY
t0=$(now)
"$FERRY" add . >/dev/null
git commit -qm files
echo "setup: $N files added and committed in $(secs "$t0" "$(now)") s" >&2
git clone -q "$A" "$WORK/b"
(cd "$WORK/b" && "$FERRY" init b >/dev/null)
git remote add b ../b
"$FERRY" sync >/dev/null 2>&1
# Content stays where it is while the expressions change: b wants nothing, and the
# expressions below keep everything wanted here.
"$FERRY" wanted b nothing >/dev/null

t_start=$(now)
"$FERRY" assistant --foreground 2>"$WORK/a.log" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
# Started and done with its first full round (the startup scan).
until grep -q "planned all" "$WORK/a.log" 2>/dev/null; do sleep 0.02; done
first_wall=$(awk -v a="$t_start" -v b="$(now)" 'BEGIN {printf "%.0f", (b-a)*1000}')
echo "startup: $(grep "planned all" "$WORK/a.log" | head -1 | sed -E 's/.*\] //'); from start to planned ${first_wall} ms"

exprs=("present or exclude=d00*" "include=d0* or present" "largerthan=5 or present" "exclude=d01* or present" "anything")
ferry_ms=()
for i in $(seq 1 "$RUNS"); do
    e=${exprs[$(( (i - 1) % ${#exprs[@]} ))]}
    before=$(grep -c "planned .* files again" "$WORK/a.log" || true)
    t0=$(now)
    "$FERRY" wanted here "$e" >/dev/null
    until [[ $(grep -c "planned .* files again" "$WORK/a.log" || true) -gt $before ]]; do sleep 0.02; done
    wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.0f", (b-a)*1000}')
    ms=$(grep "planned .* files again" "$WORK/a.log" | tail -1 | sed -E 's/.*\(([0-9]+) ms\).*/\1/')
    t0=$(now)
    git annex find --want-get >/dev/null
    annex=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.0f", (b-a)*1000}')
    echo "run $i ($e): ferry plan ${ms} ms, from 'wanted' to planned ${wall} ms; git annex find --want-get ${annex} ms"
    ferry_ms+=("$wall")
    annex_ms+=("$annex")
done
f=$(printf '%s\n' "${ferry_ms[@]}" | median)
g=$(printf '%s\n' "${annex_ms[@]}" | median)
echo "median: ferry re-plan (wanted -> planned) ${f} ms; git annex find --want-get ${g} ms; ratio $(ratio "$g" "$f")x; target < 2000 ms"

# Restart: once its queue is empty the daemon saves a checkpoint; started again after one new
# commit, it plans only what changed since, against the full startup scan above.
until [[ -s .git/annex/ferry/planned ]]; do sleep 0.1; done
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
echo "one more" >d000/new.txt
"$FERRY" add d000/new.txt >/dev/null
git commit -qm "one more"
t0=$(now)
"$FERRY" assistant --foreground 2>"$WORK/a2.log" &
DAEMON=$!
until grep -q "planned .* files changed since\|planned all" "$WORK/a2.log" 2>/dev/null; do sleep 0.02; done
wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.0f", (b-a)*1000}')
full=$(grep "planned all" "$WORK/a.log" | head -1 | sed -E 's/.*\(([0-9]+) ms.*/\1/')
line=$(grep "planned .* files changed since\|planned all" "$WORK/a2.log" | head -1)
part=$(sed -E 's/.*\(([0-9]+) ms.*/\1/' <<<"$line")
echo "restart: $(sed -E 's/.*\] //' <<<"$line"); from start to planned ${wall} ms"
echo "planning at start (daemon's log): first start ${full} ms; restart from the checkpoint ${part} ms"
echo "from start to planned (wall): first start ${first_wall} ms; restart ${wall} ms; ratio $(ratio "$first_wall" "$wall")x"
