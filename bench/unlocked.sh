#!/usr/bin/env bash
# Unlocked files: `git status` in a repository of NFILES unlocked files (ferry's filter) against
# the same files in a plain git repository, and `git add` of NEDIT edited unlocked files in a
# ferry repository against a git-annex one. Prints RESULT lines and ratios; see bench/README.md.
set -euo pipefail
NFILES=${NFILES:-10000}
NEDIT=${NEDIT:-1000}
RUNS=${RUNS:-5}
SCRATCH_NAME=unlocked
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

echo "# unlocked benchmark $(date -u +%Y-%m-%dT%H:%MZ); $(git --version); git-annex $(git annex version --raw 2>/dev/null)"
echo "# NFILES=$NFILES NEDIT=$NEDIT RUNS=$RUNS nproc=$(nproc)"
python3 - "$WORK/src" "$NFILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(100):
    os.makedirs(os.path.join(d, "d%02d" % i))
for i in range(n):
    with open(os.path.join(d, "d%02d" % (i % 100), "f%05d" % i), "wb") as f:
        f.write(os.urandom(4096))
PY
# Files older than any index written below: no "racily clean" entries for git to re-read.
find "$WORK/src" -type f -exec touch -d '-2 minutes' {} +

setup() { # dir kind
    mkdir -p "$1"; cp -a "$WORK/src/." "$1/"; cd "$1"; git init -q
    case $2 in
        ferry) "$FERRY" init >/dev/null; "$FERRY" add -q --unlocked . ;;
        annex) git annex init -q bench; git config annex.addunlocked true; git annex add -q . ;;
        git) git add -A ;;
    esac
    git commit -q -m files
    git update-index -q --refresh || true
    cd "$WORK"
}
setup "$WORK/ferry-repo" ferry
setup "$WORK/git-repo" git
setup "$WORK/annex-repo" annex

time_status() { # dir
    local t0 t1; cd "$1"; t0=$(now); git status --porcelain >/dev/null; t1=$(now); cd "$WORK"
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b-a}'
}
fs=() gs=()
for ((r = 0; r < RUNS; r++)); do fs+=("$(time_status "$WORK/ferry-repo")"); gs+=("$(time_status "$WORK/git-repo")"); done
F=$(printf '%s\n' "${fs[@]}" | median); G=$(printf '%s\n' "${gs[@]}" | median)
[[ -z $(git -C "$WORK/ferry-repo" status --porcelain) ]] && echo "CHECK ferry_status_clean=ok" || echo "CHECK ferry_status_clean=FAIL"
echo "RESULT status_ferry_unlocked=$F s"
echo "RESULT status_plain_git=$G s"
echo "RESULT status_ferry_over_git=$(ratio "$F" "$G")x (target <= 2)"

edit_and_add() { # dir -> seconds for git add of NEDIT edited files
    local t0 t1 list; cd "$1"
    list=$(git ls-files | head -n "$NEDIT")
    while read -r f; do printf 'edit %s\n' "$RANDOM$RANDOM" >>"$f"; done <<<"$list"
    find . -path ./.git -prune -o -type f -newermt '-1 minute' -exec touch -d '-1 minute' {} + 2>/dev/null || true
    t0=$(now); xargs -d '\n' git add -- <<<"$list"; t1=$(now)
    [[ -z $(git diff --name-only) ]] || { echo "CHECK $(basename "$1")_add_complete=FAIL" >&2; }
    git commit -q -m edits
    cd "$WORK"
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b-a}'
}
fa=() aa=()
for ((r = 0; r < (RUNS < 3 ? RUNS : 3); r++)); do
    fa+=("$(edit_and_add "$WORK/ferry-repo")"); aa+=("$(edit_and_add "$WORK/annex-repo")")
done
FA=$(printf '%s\n' "${fa[@]}" | median); AA=$(printf '%s\n' "${aa[@]}" | median)
ptr=$(git -C "$WORK/ferry-repo" cat-file -p "HEAD:$(git -C "$WORK/ferry-repo" ls-files | head -1)")
[[ $ptr == /annex/objects/* ]] && echo "CHECK ferry_edits_annexed=ok" || echo "CHECK ferry_edits_annexed=FAIL ($ptr)"
echo "RESULT git_add_edited_ferry=$FA s"
echo "RESULT git_add_edited_annex=$AA s"
echo "RESULT git_add_annex_over_ferry=$(ratio "$AA" "$FA")x (target >= 5)"
