#!/usr/bin/env bash
# Benchmarks for `ferry add` against git-annex (and plain git / sha256sum as floors).
#
# Every timing is printed next to an anchor measured in the same run (ratios), because the
# machines this runs on are shared and noisy. See bench/README.md for what each phase measures.
#
# Knobs (environment):
#   NFILES=10000      small phase: number of files
#   SIZE_KB=4         small phase: size of each file, KiB
#   BIG_MB=1024       big phase: size of the single big file, MiB
#   RSS_FILES=100000  rss phase: number of 10-byte files
#   RSS_ANNEX=0       rss phase: also time `git annex add` of the same tree (slow)
#   RUNS=3            repetitions per measurement (median is reported)
#   PHASES="small big rss"
#   FERRY=path        ferry binary (default: <repo>/target/release/ferry, built if missing)
#   KEEP=0            1: keep the scratch directory (for debugging)
#
# Output: one `RESULT name=value unit` line per measurement, `CHECK name=ok|FAIL ...` lines for
# correctness checks, then a human-readable table. Exit status is non-zero if a check failed.
set -euo pipefail

NFILES=${NFILES:-10000}
SIZE_KB=${SIZE_KB:-4}
BIG_MB=${BIG_MB:-1024}
RSS_FILES=${RSS_FILES:-100000}
RSS_ANNEX=${RSS_ANNEX:-0}
RUNS=${RUNS:-3}
PHASES=${PHASES:-small big rss}
KEEP=${KEEP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Resolve tools that depend on the real HOME (pyenv shims, rustup) before HOME is replaced.
PY=$(python3 -c 'import sys; print(sys.executable)')
if [[ -z "${FERRY:-}" ]]; then
    FERRY=$ROOT/target/release/ferry
    if [[ ! -x $FERRY ]]; then
        echo "building ferry (cargo build --release -p ferry-cli)..." >&2
        (cd "$ROOT" && cargo build --release -p ferry-cli) >&2
    fi
fi
[[ -x $FERRY ]] || { echo "ferry binary not found: $FERRY" >&2; exit 2; }
FERRY=$(cd "$(dirname "$FERRY")" && pwd)/$(basename "$FERRY")
command -v git-annex >/dev/null || { echo "git-annex is required" >&2; exit 2; }
HAVE_OPENSSL=0
command -v openssl >/dev/null && HAVE_OPENSSL=1

WORK=$(mktemp -d /tmp/ferry-bench-XXXX)
cleanup() {
    if [[ $KEEP == 1 ]]; then
        echo "kept $WORK" >&2
    else
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private, reproducible git environment.
export HOME=$WORK/home
export GIT_CONFIG_GLOBAL=$HOME/.gitconfig
export GIT_CONFIG_NOSYSTEM=1
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
mkdir -p "$HOME"
git config --global user.name "ferry bench"
git config --global user.email "bench@ferry.invalid"
git config --global init.defaultBranch main
# No background `gc --auto` / maintenance after commits: it would steal CPU from the next run.
git config --global gc.auto 0
git config --global maintenance.auto false
LOG=$WORK/log
: >"$LOG"

# Snapshot the binary: target/release/ferry may be rebuilt by someone else while this runs, and
# every measurement must use the same build.
FERRY_SRC=$FERRY
mkdir -p "$WORK/bin"
cp "$FERRY_SRC" "$WORK/bin/ferry"
FERRY=$WORK/bin/ferry
FERRY_INFO="$(stat -c '%y' "$FERRY_SRC" | cut -d. -f1) sha256:$(sha256sum "$FERRY" | cut -c1-12)"
SRC_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    SRC_REV="$SRC_REV+dirty"
fi

declare -A T=()        # name -> space-separated samples
declare -A UNIT=()
ORDER=()
CHECKS=()
FAILED=0

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
add_sample() { # name value unit
    [[ -n ${T[$1]+x} ]] || ORDER+=("$1")
    T[$1]="${T[$1]:-} $2"
    UNIT[$1]=$3
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) printf "%.4f\n", v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
check() { # name ok|FAIL detail
    echo "CHECK $1=$2 $3"
    CHECKS+=("$1=$2 $3")
    [[ $2 == ok ]] || FAILED=1
}
die_cmd() { # what dir
    echo "ERROR: $1 failed (in $2). Last log lines:" >&2
    tail -20 "$LOG" >&2
    exit 1
}
settle() { sync; }  # flush dirty pages of the untimed setup so writeback does not land in a timing
readall() { cat "$@" >/dev/null; }  # first-touch page cache cost is paid here, not in the timing

# Writes N files into 100 directories (fewer if N < 100). Content is unique per file:
# random bytes of SIZE, or for size 10 a 10-byte counter line.
gen_tree() { # dir n size_bytes
    "$PY" - "$1" "$2" "$3" <<'EOF'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ndirs = max(1, min(100, n))
for i in range(ndirs):
    os.makedirs(os.path.join(d, "d%03d" % i), exist_ok=True)
for i in range(n):
    data = ("%09d\n" % i).encode() if size == 10 else os.urandom(size)
    with open(os.path.join(d, "d%03d" % (i % ndirs), "f%07d" % i), "wb") as f:
        f.write(data)
EOF
}

# A fresh repository (with one seed commit when SEED=1). kind: ferry | annex | git
# SEED=0 (default) is the case the target is stated for: git-annex is slowest in a repository
# with no commit yet (about 60 s for 10k files in the anchor measurements).
new_repo() { # dir kind
    local dir=$1 kind=$2
    mkdir -p "$dir"
    (
        cd "$dir"
        git init -q
        if [[ ${SEED:-0} == 1 ]]; then
            echo "seed" >README
            git add README
            git commit -q -m seed
        fi
        case $kind in
            ferry) "$FERRY" init >>"$LOG" 2>&1 ;;
            annex) git annex init -q bench >>"$LOG" 2>&1 ;;
            git) ;;
        esac
    ) || die_cmd "creating $kind repo" "$dir"
}

rmrepo() { chmod -R u+w "$1" 2>/dev/null || true; rm -rf "$1"; }

count_symlinks() { find "$1" -path "$1/.git" -prune -o -type l -print | wc -l; }

# Peak-RSS + wall-time runner: runs argv in a dir as a direct child.
#   prints "<wall_s> <self_peak_kB> <tree_peak_kB> <rc>"
# self_peak: the child's VmHWM from /proc, sampled every 5 ms (VmHWM is a high-water mark, so
#   the last sample before exit is the peak up to the final few ms).
# tree_peak: getrusage(RUSAGE_CHILDREN).ru_maxrss = max over the child and the descendants it
#   reaped (ferry's git subprocesses) -- an upper bound on the child's own peak.
cat >"$WORK/rss.py" <<'EOF'
import os, resource, subprocess, sys, time
cwd, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(os.devnull, "wb") as out, open(log, "ab") as err:
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err)
    status, hwm = "/proc/%d/status" % p.pid, 0
    while p.poll() is None:
        try:
            with open(status, "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
                        break
        except OSError:
            pass
        time.sleep(0.005)
    wall = time.perf_counter() - t0
tree = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("%.4f %d %d %d" % (wall, hwm, tree, p.returncode))
EOF

echo "# ferry add benchmark  $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# ferry: $FERRY_SRC ($("$FERRY" --version 2>/dev/null || echo '?'); built $FERRY_INFO; repo HEAD $SRC_REV at start)"
echo "# $(git --version); git-annex $(git annex version --raw 2>/dev/null || git annex version | head -1)"
echo "# nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# NFILES=$NFILES SIZE_KB=$SIZE_KB BIG_MB=$BIG_MB RSS_FILES=$RSS_FILES RUNS=$RUNS PHASES=\"$PHASES\" RSS_ANNEX=$RSS_ANNEX SEED=${SEED:-0}"
echo "# scratch: $WORK"

# ---------------------------------------------------------------------------------------------
phase_small() {
    local src=$WORK/small-src
    echo "# small: generating $NFILES x ${SIZE_KB} KiB files" >&2
    gen_tree "$src" "$NFILES" $((SIZE_KB * 1024))
    local run kind dir t0 t1 t2
    local done_dirs=()
    for ((run = 1; run <= RUNS; run++)); do
        local order=(ferry annex git)
        ((run % 2 == 0)) && order=(annex ferry git)
        for kind in "${order[@]}"; do
            dir=$WORK/small-$kind-$run
            new_repo "$dir" "$kind"
            cp -a "$src/." "$dir/"
            settle
            cd "$dir"
            echo "# small run $run: $kind" >&2
            case $kind in
                ferry)
                    t0=$(now)
                    "$FERRY" add . >/dev/null 2>>"$LOG" || die_cmd "ferry add . (small, run $run)" "$dir"
                    t1=$(now)
                    git commit -q -m x >>"$LOG" 2>&1 || die_cmd "git commit after ferry add (small)" "$dir"
                    t2=$(now)
                    ;;
                annex)
                    t0=$(now)
                    git annex add . --quiet >>"$LOG" 2>&1 || die_cmd "git annex add . (small)" "$dir"
                    t1=$(now)
                    git commit -q -m x >>"$LOG" 2>&1 || die_cmd "git commit after git annex add (small)" "$dir"
                    t2=$(now)
                    ;;
                git)
                    t0=$(now)
                    git add -A >>"$LOG" 2>&1 || die_cmd "git add -A (small)" "$dir"
                    t1=$(now)
                    git commit -q -m x >>"$LOG" 2>&1 || die_cmd "git commit (small, plain git)" "$dir"
                    t2=$(now)
                    ;;
            esac
            add_sample "small_${kind}_add_commit" "$(elapsed "$t0" "$t2")" s
            add_sample "small_${kind}_add_only" "$(elapsed "$t0" "$t1")" s
            if [[ $kind == ferry && $run == 1 ]]; then
                local n ls
                n=$(count_symlinks "$dir")
                [[ $n == "$NFILES" ]] && check small_ferry_symlinks ok "($n)" \
                    || check small_ferry_symlinks FAIL "(found $n symlinks, expected $NFILES; repro: see README)"
                ls=$(git ls-files | wc -l)
                local want=$((NFILES + ${SEED:-0}))
                [[ $ls == "$want" ]] && check small_ferry_committed ok "($ls files in HEAD)" \
                    || check small_ferry_committed FAIL "(git ls-files: $ls, expected $want)"
                [[ -z $(git status --porcelain) ]] && check small_ferry_clean ok "(git status clean after commit)" \
                    || check small_ferry_clean FAIL "(git status not clean after commit: $(git status --porcelain | head -3 | tr '\n' ' '))"
                if git annex fsck --fast --quiet >>"$LOG" 2>&1; then
                    check small_ferry_fsck ok "(git annex fsck --fast)"
                else
                    check small_ferry_fsck FAIL "(git annex fsck --fast --quiet exited non-zero; see log)"
                    tail -20 "$LOG" >&2
                fi
            fi
            cd "$WORK"
            # Removed only after the phase: deleting 10k inodes right before the next tool's
            # run makes ext4's inode allocator skip "recently deleted" inodes, which would tax
            # whichever tool runs next.
            done_dirs+=("$dir")
        done
    done
    for dir in "${done_dirs[@]}"; do rmrepo "$dir"; done
    rm -rf "$src"
}

# ---------------------------------------------------------------------------------------------
phase_big() {
    local bigdir=$WORK/big
    mkdir -p "$bigdir"
    local big=$bigdir/bigfile
    echo "# big: generating ${BIG_MB} MiB file" >&2
    head -c $((BIG_MB * 1024 * 1024)) /dev/urandom >"$big"
    settle
    readall "$big"
    local run t0 t1 dir key_calc key_add
    for ((run = 1; run <= RUNS; run++)); do
        echo "# big run $run" >&2
        # ferry add (fresh repo, file copied in untimed)
        dir=$WORK/big-ferry-$run
        new_repo "$dir" ferry
        cp --reflink=never "$big" "$dir/bigfile"
        settle
        readall "$dir/bigfile"
        cd "$dir"
        t0=$(now)
        "$FERRY" add bigfile >/dev/null 2>>"$LOG" || die_cmd "ferry add bigfile (run $run)" "$dir"
        t1=$(now)
        add_sample big_ferry_add "$(elapsed "$t0" "$t1")" s
        key_add=$(basename "$(readlink bigfile)")
        cd "$WORK"
        rmrepo "$dir"

        # ferry calckey (read + SHA-256 only)
        readall "$big"
        t0=$(now)
        key_calc=$("$FERRY" calckey "$big" 2>>"$LOG") || die_cmd "ferry calckey" "$bigdir"
        t1=$(now)
        add_sample big_ferry_calckey "$(elapsed "$t0" "$t1")" s
        if [[ $run == 1 ]]; then
            [[ $key_add == "$key_calc" ]] && check big_key_match ok "($key_calc)" \
                || check big_key_match FAIL "(add: $key_add, calckey: $key_calc)"
        fi

        readall "$big"
        t0=$(now)
        sha256sum "$big" >/dev/null
        t1=$(now)
        add_sample big_sha256sum "$(elapsed "$t0" "$t1")" s

        if [[ $HAVE_OPENSSL == 1 ]]; then
            readall "$big"
            t0=$(now)
            openssl dgst -sha256 "$big" >/dev/null
            t1=$(now)
            add_sample big_openssl_sha256 "$(elapsed "$t0" "$t1")" s
        fi

        dir=$WORK/big-annex-$run
        new_repo "$dir" annex
        cp --reflink=never "$big" "$dir/bigfile"
        settle
        readall "$dir/bigfile"
        cd "$dir"
        t0=$(now)
        git annex add bigfile --quiet >>"$LOG" 2>&1 || die_cmd "git annex add bigfile" "$dir"
        t1=$(now)
        add_sample big_annex_add "$(elapsed "$t0" "$t1")" s
        cd "$WORK"
        rmrepo "$dir"
    done
    rm -rf "$bigdir"
}

# ---------------------------------------------------------------------------------------------
phase_rss() {
    local src=$WORK/rss-src
    echo "# rss: generating $RSS_FILES x 10-byte files" >&2
    gen_tree "$src" "$RSS_FILES" 10
    local run kind dir out wall self tree rc n
    local kinds=(ferry git)
    [[ $RSS_ANNEX == 1 ]] && kinds+=(annex)
    for ((run = 1; run <= RUNS; run++)); do
        for kind in "${kinds[@]}"; do
            dir=$WORK/rss-$kind-$run
            new_repo "$dir" "$kind"
            cp -a "$src/." "$dir/"
            settle
            echo "# rss run $run: $kind" >&2
            case $kind in
                ferry) out=$("$PY" "$WORK/rss.py" "$dir" "$LOG" "$FERRY" add .) ;;
                git) out=$("$PY" "$WORK/rss.py" "$dir" "$LOG" git add -A) ;;
                annex) out=$("$PY" "$WORK/rss.py" "$dir" "$LOG" git annex add . --quiet) ;;
            esac
            read -r wall self tree rc <<<"$out"
            [[ $rc == 0 ]] || die_cmd "$kind add of $RSS_FILES files (rss phase, exit $rc)" "$dir"
            add_sample "rss_${kind}_add_wall" "$wall" s
            add_sample "rss_${kind}_peak_rss_self" "$(awk -v k="$self" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
            add_sample "rss_${kind}_peak_rss_tree" "$(awk -v k="$tree" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
            if [[ $kind == ferry && $run == 1 ]]; then
                n=$(count_symlinks "$dir")
                [[ $n == "$RSS_FILES" ]] && check rss_ferry_symlinks ok "($n)" \
                    || check rss_ferry_symlinks FAIL "(found $n symlinks, expected $RSS_FILES)"
                n=$(git -C "$dir" diff --cached --name-only | wc -l)
                [[ $n == "$RSS_FILES" ]] && check rss_ferry_staged ok "($n staged)" \
                    || check rss_ferry_staged FAIL "(git diff --cached: $n staged, expected $RSS_FILES)"
            fi
            rmrepo "$dir"
        done
    done
    rm -rf "$src"
}

for p in $PHASES; do
    case $p in
        small) phase_small ;;
        big) phase_big ;;
        rss) phase_rss ;;
        *) echo "unknown phase: $p" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------------------------
declare -A M=()
for name in "${ORDER[@]}"; do
    M[$name]=$(median "${T[$name]}")
    [[ ${UNIT[$name]} == MiB ]] && M[$name]=$(printf '%.1f' "${M[$name]}")
    echo "RESULT $name=${M[$name]} ${UNIT[$name]}"
done
for name in "${ORDER[@]}"; do
    [[ $name == *peak_rss* ]] && echo "RESULT ${name}_max=$(maxof "${T[$name]}") ${UNIT[$name]}"
done

RATIOS=()
emit_ratio() { # name numerator denominator target(text) pass-expr(awk on r)
    local num=${M[$2]:-} den=${M[$3]:-}
    [[ -n $num && -n $den ]] || return 0
    local r verdict=""
    r=$(ratio "$num" "$den")
    if [[ -n ${5:-} ]]; then
        verdict=$(awk -v r="$r" "BEGIN { print (($5) ? \"PASS\" : \"FAIL\") }")
    fi
    echo "RESULT $1=$r x"
    RATIOS+=("$1|$r|${4:-}|$verdict")
}
emit_ratio small_annex_over_ferry small_annex_add_commit small_ferry_add_commit ">= 30" "r >= 30"
emit_ratio small_ferry_over_git small_ferry_add_commit small_git_add_commit "" ""
emit_ratio small_annex_over_ferry_add_only small_annex_add_only small_ferry_add_only "" ""
emit_ratio big_ferry_add_over_calckey big_ferry_add big_ferry_calckey "<= 1.15" "r <= 1.15"
emit_ratio big_ferry_add_over_sha256sum big_ferry_add big_sha256sum "" ""
emit_ratio big_ferry_calckey_over_sha256sum big_ferry_calckey big_sha256sum "" ""
emit_ratio big_ferry_add_over_openssl big_ferry_add big_openssl_sha256 "" ""
emit_ratio big_annex_add_over_ferry_add big_annex_add big_ferry_add "" ""
emit_ratio rss_ferry_over_git_wall rss_ferry_add_wall rss_git_add_wall "" ""
emit_ratio rss_annex_over_ferry_wall rss_annex_add_wall rss_ferry_add_wall "" ""
RSS_VERDICT=""
if [[ -n ${T[rss_ferry_peak_rss_self]:-} ]]; then
    rssmax=$(maxof "${T[rss_ferry_peak_rss_self]}")
    RSS_VERDICT=$(awk -v m="$rssmax" 'BEGIN { print (m < 200 ? "PASS" : "FAIL") }')
    echo "RESULT rss_ferry_peak_rss_self_target=$RSS_VERDICT (max $rssmax MiB < 200 MiB)"
fi

echo
echo "== ferry add benchmark: medians of $RUNS run(s) =="
printf '%-34s %12s  %-4s  %s\n' measurement median unit "samples"
for name in "${ORDER[@]}"; do
    printf '%-34s %12s  %-4s  %s\n' "$name" "${M[$name]}" "${UNIT[$name]}" "$(echo ${T[$name]})"
done
echo
printf '%-34s %10s  %-8s %s\n' ratio value target verdict
for row in "${RATIOS[@]}"; do
    IFS='|' read -r n r tg v <<<"$row"
    printf '%-34s %10s  %-8s %s\n' "$n" "$r" "$tg" "$v"
done
[[ -n $RSS_VERDICT ]] && printf '%-34s %10s  %-8s %s\n' "rss_ferry_peak_rss_self (max)" "$rssmax MiB" "< 200" "$RSS_VERDICT"
if ((${#CHECKS[@]})); then
    echo
    echo "checks:"
    for c in "${CHECKS[@]}"; do echo "  $c"; done
fi
exit $FAILED
