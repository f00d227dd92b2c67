#!/usr/bin/env bash
# The git-annex assistant against the ferry assistant, side by side in one run. Method of
# /work/shared/anchors/01_annex_assistant_latency.sh: a Python helper writes files into A and
# polls B's work tree for their names; CPU is read from /proc over each daemon's process tree.
#
# Phases (PHASES, default "single batch idle"):
#   single  two pairs (git-annex, ferry): A initialised, B a clone, A has remote B, B has remote
#           origin, both synced once; both daemons of each pair run `assistant --foreground`.
#           RUNS times: all four daemon trees idle, then one new 1 KiB file in A's top directory;
#           time until its name exists in B's work tree (lexists). Odd runs git-annex first.
#   batch   same pairs: NBATCH (1000) new 1 KiB files written at once into a new dir of A; time
#           until all names exist in B. BATCH_RUNS runs (default 1).
#   bigsmall  pairs as above: a BIG_MB (1024) MiB file of random bytes is moved into A; once its
#           content is on its way into B (a partial of its key in B's .git/annex/tmp), new 1 KiB
#           files are written into A one after another, each timed until B's file holds its
#           bytes, for as long as the big transfer lasts (at most BIGSMALL_MAX probes). Also
#           reported: when the big file's content is in B. RUNS runs, each on a new pair of
#           clones (started, measured, stopped, removed); even runs ferry first.
#   idle    one repository per tool holding NIDLE committed 4 KiB files (no remotes): start one
#           daemon, time until its process tree is idle (startup scan) and the CPU it used, then
#           the CPU over IDLE_S seconds and the RSS of the tree (daemon + its git helpers).
#
# "Idle" means: over a quiet window (2 s between runs, 3 s after a pair starts, 5 s for the idle
# phase's startup) the daemon trees used at most 5 ms CPU per daemon per second. The time to
# idle is the start of that window (sampled every 0.1 s).
#
# Knobs (environment):
#   RUNS=20 NBATCH=1000 BATCH_RUNS=1 NIDLE=10000 IDLE_S=30 PHASES="single batch idle"
#   BIG_MB=1024 BIGSMALL_MAX=20 BIG_TIMEOUT=600   bigsmall: big file size, probes per run, and
#                         how long the big file (and a small file) may take to reach B
#   ONLY=annex|ferry      measure one tool only (default: both; ratios need both)
#   FERRY=path            ferry binary (default <repo>/target/release/ferry, built if missing)
#   QUIET_WAIT=30         before each timed step wait up to this many s for the machine to be
#                         < 15 % busy (0: do not wait)
#   SINGLE_TIMEOUT=30 BATCH_TIMEOUT=300 STARTUP_TIMEOUT=1200   give up (value NA) after so many s
#   SETTLE_TIMEOUT=400    max wait for all daemons to go idle before a batch run (git-annex keeps
#                         uploading a previous batch's content for minutes)
#   KEEP=0                1: keep the scratch directory and the daemon logs
#
# Output: `METRIC name=median unit min=.. max=.. n=..` per measurement, `METRIC
# assistant.<m>.annex_over_ferry=<r>x` per ratio, `CHECK name=ok|FAIL` lines, then a table.
# Exit status: non-zero if a check failed, a daemon died, or the ferry binary has no assistant.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-20}
NBATCH=${NBATCH:-1000}
BATCH_RUNS=${BATCH_RUNS:-1}
NIDLE=${NIDLE:-10000}
IDLE_S=${IDLE_S:-30}
PHASES=${PHASES:-single batch idle}
ONLY=${ONLY:-}
QUIET_WAIT=${QUIET_WAIT:-30}
SINGLE_TIMEOUT=${SINGLE_TIMEOUT:-30}
BATCH_TIMEOUT=${BATCH_TIMEOUT:-300}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-1200}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-400}
KEEP=${KEEP:-0}
BIG_MB=${BIG_MB:-1024}
BIGSMALL_MAX=${BIGSMALL_MAX:-20}
BIG_TIMEOUT=${BIG_TIMEOUT:-600}

case $ONLY in
    '') TOOLS=(annex ferry) ;;
    annex | ferry) TOOLS=("$ONLY") ;;
    *) echo "ONLY must be annex, ferry or empty" >&2; exit 2 ;;
esac
want() { [[ " ${TOOLS[*]} " == *" $1 "* ]]; }
phase() { [[ " $PHASES " == *" $1 "* ]]; }

command -v git-annex >/dev/null || { echo "git-annex is required" >&2; exit 2; }
command -v lsof >/dev/null || echo "WARN: lsof missing; the git-annex assistant needs it" >&2
# Resolved before lib.sh replaces HOME (python3 may be a pyenv shim).
PY=$(python3 -c 'import sys; print(sys.executable)')
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Without ferry in the run, do not build it just to satisfy lib.sh.
if ! want ferry && [[ -z ${FERRY:-} && ! -x $BENCH_ROOT/target/release/ferry ]]; then
    FERRY=$(command -v true)
fi
SCRATCH_NAME=assistant
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# ferry preflight: the CLI must have the assistant, before any set-up work is done.
if want ferry; then
    if ! "$FERRY" assistant --help >/dev/null 2>&1; then
        echo "ERROR: $FERRY_SRC ($("$FERRY" --version 2>/dev/null || echo '?')) has no working 'ferry assistant' subcommand:" >&2
        "$FERRY" assistant --help 2>&1 | head -3 | sed 's/^/  /' >&2 || true
        echo "Build a ferry with the assistant (or point FERRY at one), or run ONLY=annex to measure git-annex alone." >&2
        exit 2
    fi
    "$FERRY" status --help >/dev/null 2>&1 || echo "WARN: $FERRY has no 'status' subcommand; the status check will fail" >&2
fi

H=$WORK/helper.py
LOGS=$WORK/logs
mkdir -p "$LOGS"
FAILED=0
check() { # name ok|FAIL [detail]
    echo "CHECK $1=$2${3:+ ($3)}"
    [[ $2 == ok ]] || FAILED=1
}

# ---- helper: process-tree CPU / RSS from /proc, idle wait, write-and-probe --------------------
cat >"$H" <<'EOF'
import os, sys, time, json, signal
CLK = os.sysconf('SC_CLK_TCK')
def procs():
    out = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try: s = open('/proc/%s/stat' % p).read()
        except OSError: continue
        rest = s[s.rindex(')') + 2:].split()   # rest[i] is field i+3 of proc(5)
        # ppid, utime+stime+cutime+cstime, starttime
        out[int(p)] = (int(rest[1]), sum(int(x) for x in rest[11:15]), rest[19], rest[0])
    return out
def tree(roots, ps):
    kids = {}
    for pid, v in ps.items(): kids.setdefault(v[0], []).append(pid)
    seen, stack = set(), [r for r in roots if r in ps]
    while stack:
        p = stack.pop()
        if p in seen: continue
        seen.add(p); stack.extend(kids.get(p, []))
    return seen
def ticks(roots):
    ps = procs(); return sum(ps[p][1] for p in tree(roots, ps))
def alive(roots):                 # any root still running (a zombie is not)
    ps = procs(); return any(r in ps and ps[r][3] not in 'ZX' for r in roots)
def holds(path, data):            # the file (followed through a symlink) holds exactly `data`
    try:
        if os.stat(path).st_size != len(data): return False
        with open(path, 'rb') as f: return f.read() == data
    except OSError: return False
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == 'cpu_ms':             # cpu_ms PID... -> CPU ms used so far by the trees
    print(ticks([int(x) for x in args]) * 1000 // CLK)
elif cmd == 'rss':              # rss PID... -> sum of VmRSS (KiB) over the trees
    ps = procs(); tot = 0
    for p in tree([int(x) for x in args], ps):
        try:
            for line in open('/proc/%d/status' % p):
                if line.startswith('VmRSS:'): tot += int(line.split()[1])
        except OSError: pass
    print(tot)
elif cmd == 'snap':             # snap PID... -> pid:starttime of every process in the trees
    ps = procs(); print(' '.join('%d:%s' % (p, ps[p][2]) for p in sorted(tree([int(x) for x in args], ps))))
elif cmd == 'kill':             # kill SIG pid:starttime... -> signal those still the same process
    sig = int(args[0]); ps = procs()
    for item in args[1:]:
        pid, st = item.split(':'); pid = int(pid)
        if pid in ps and ps[pid][2] == st:
            try: os.kill(pid, sig)
            except OSError: pass
elif cmd == 'waitidle':         # waitidle TIMEOUT QUIET POLL T0 PID...
    # Prints "<s since T0 at which the trees went quiet> <CPU ms used by then>", or
    # "TIMEOUT <ms>" or "DEAD <ms>" (every root exited). Quiet: over QUIET seconds the trees
    # used at most 5 ms of CPU per daemon per second (an idle git-annex assistant uses ~1-2),
    # and at least 2 ticks are allowed.
    timeout, quiet, poll, t0 = (float(x) for x in args[:4]); roots = [int(x) for x in args[4:]]
    thr = max(2, 0.005 * CLK * len(roots) * quiet)
    hist = []
    while True:
        now = time.time(); tk = ticks(roots); hist.append((now, tk))
        if not alive(roots):
            print('DEAD %d' % (tk * 1000 // CLK)); break
        if now - hist[0][0] >= quiet:
            q = [h for h in hist if tk - h[1] <= thr]   # samples since which the trees are quiet
            if q and now - q[0][0] >= quiet:
                print('%.2f %d' % (q[0][0] - t0, q[0][1] * 1000 // CLK)); break
        if now - t0 > timeout:
            print('TIMEOUT %d' % (tk * 1000 // CLK)); break
        time.sleep(poll)
elif cmd == 'probe':            # probe SRCDIR DSTDIR PREFIX N SIZE POLL TIMEOUT -> JSON, times in ms
    src, dst, prefix = args[0], args[1], args[2]
    n, size, poll, timeout = int(args[3]), int(args[4]), float(args[5]), float(args[6])
    names = ['%s%05d' % (prefix, i) for i in range(n)]
    data = {nm: os.urandom(size) for nm in names}
    os.makedirs(src, exist_ok=True)
    t0 = time.time()
    for nm in names:
        with open(os.path.join(src, nm), 'wb') as f: f.write(data[nm])
    r = dict(created=(time.time() - t0) * 1000, first_visible=None, all_visible=None,
             first_content=None, all_content=None)
    pending = set(names); nocontent = set(names)
    def has_content(nm):  # B's file (followed through a symlink) holds the bytes written in A
        return holds(os.path.join(dst, nm), data[nm])
    while True:
        if n == 1:
            if os.path.lexists(os.path.join(dst, names[0])): pending.clear()
        else:
            try: pending -= set(os.listdir(dst))
            except OSError: pass
        nocontent -= {nm for nm in nocontent if nm not in pending and has_content(nm)}
        now = (time.time() - t0) * 1000
        if r['first_visible'] is None and len(pending) < n: r['first_visible'] = now
        if r['all_visible'] is None and not pending: r['all_visible'] = now
        if r['first_content'] is None and len(nocontent) < n: r['first_content'] = now
        if not nocontent: r['all_content'] = now; break
        if now > timeout * 1000: break
        time.sleep(poll)
    r['visible'] = n - len(pending); r['with_content'] = n - len(nocontent)
    print(json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in r.items()}))
elif cmd == 'bigsmall':         # bigsmall SRC DST STAGED NAME PREFIX POLL PROBE_TIMEOUT BIG_TIMEOUT MAXPROBES -> JSON
    # Moves the big file STAGED into A as NAME (a rename: it appears whole), waits until its
    # content is on its way into B (a non-empty partial of its key in B's .git/annex/tmp), then,
    # one after another while that partial is there, writes a new 1 KiB file into A and times
    # until B's file holds its bytes. Ends by waiting for the big file's content in B.
    src, dst, staged, name, prefix = args[:5]
    poll, probe_timeout, big_timeout, maxprobes = float(args[5]), float(args[6]), float(args[7]), int(args[8])
    size = os.stat(staged).st_size
    tmp = os.path.join(dst, '.git', 'annex', 'tmp')
    mark = 'SHA256E-s%d--' % size
    def in_flight():
        try: return any(e.name.startswith(mark) and e.stat().st_size > 0 for e in os.scandir(tmp))
        except OSError: return False
    def big_done():
        try: return os.stat(os.path.join(dst, name)).st_size == size
        except OSError: return False
    t0 = time.time()
    ms = lambda: (time.time() - t0) * 1000
    os.rename(staged, os.path.join(src, name))
    r = dict(in_flight=None, big_done=None, probes=[], overlapped=0, missed=0)
    while not in_flight() and not big_done() and ms() < big_timeout * 1000: time.sleep(poll)
    if in_flight(): r['in_flight'] = ms()
    while r['in_flight'] is not None and len(r['probes']) < maxprobes and in_flight():
        nm = '%s%02d' % (prefix, len(r['probes']))
        data = os.urandom(1024); p0 = time.time()
        with open(os.path.join(src, nm), 'wb') as f: f.write(data)
        while not holds(os.path.join(dst, nm), data) and time.time() - p0 < probe_timeout: time.sleep(poll)
        if not holds(os.path.join(dst, nm), data): r['missed'] += 1; break
        r['probes'].append(round((time.time() - p0) * 1000))
        r['overlapped'] += in_flight()     # the big transfer outlasted this probe
    while not big_done() and ms() < big_timeout * 1000: time.sleep(poll)
    if big_done(): r['big_done'] = ms()
    print(json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in r.items()}))
elif cmd == 'mkbig':            # mkbig PATH MIB -> MIB MiB of random bytes
    with open(args[0], 'wb') as f:
        for _ in range(int(args[1])): f.write(os.urandom(1 << 20))
elif cmd == 'mkfiles':          # mkfiles DIR N SIZE -> N files in subdirectories of 100
    d, n, size = args[0], int(args[1]), int(args[2])
    for i in range(n):
        sub = os.path.join(d, 'd%03d' % (i // 100)); os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, 'f%06d' % i), 'wb') as f: f.write(os.urandom(size))
elif cmd == 'jlist':            # jlist JSON KEY -> the list's items, space-separated
    print(' '.join(str(x) for x in json.loads(args[0]).get(args[1]) or []))
elif cmd == 'jget':             # jget JSON KEY -> value or NA
    v = json.loads(args[0]).get(args[1]); print('NA' if v is None else v)
elif cmd == 'running':          # running JSON -> exit 0 iff it is an object with "running": true
    try: sys.exit(0 if json.loads(args[0]).get('running') is True else 1)
    except Exception: sys.exit(1)
EOF
hp() { "$PY" "$H" "$@"; }

# ---- statistics and output -----------------------------------------------------------------
stats() { # values... -> "min median max n" (NA values are skipped)
    printf '%s\n' "$@" | grep -v '^NA$' | grep . | sort -g | awk '{a[NR]=$1}
        END {if (NR == 0) {print "NA NA NA 0"; exit}
             m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; print a[1], m, a[NR], NR}' || true
}
declare -A MED=()
metric() { # name unit values...
    local name=$1 unit=$2 mn md mx n; shift 2
    read -r mn md mx n < <(stats "$@")
    MED[$name]=$md
    echo "METRIC $name=$md $unit min=$mn max=$mx n=$n"
}
# annex/ferry; a ferry value of 0 (below the resolution `floor`) gives a lower bound.
rat() { # annex ferry [floor]
    awk -v a="$1" -v b="$2" -v f="${3:-0}" 'BEGIN {
        if (a == "NA" || b == "NA" || a == "" || b == "") {print "NA"; exit}
        if (b + 0 == 0) {if (f > 0) printf ">=%.1fx\n", a / f; else print "inf"; exit}
        printf "%.2fx\n", a / b}'
}

busy_pct() {
    local a b c d e f g h t1 i1 t2 i2
    read -r _ a b c d e f g h _ </proc/stat; t1=$((a + b + c + d + e + f + g + h)); i1=$((d + e)); sleep 1
    read -r _ a b c d e f g h _ </proc/stat; t2=$((a + b + c + d + e + f + g + h)); i2=$((d + e))
    echo $((100 * ((t2 - t1) - (i2 - i1)) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}
WARNS=0
wait_quiet() { # wait up to QUIET_WAIT s for the machine to be < 15 % busy (daemons included)
    ((QUIET_WAIT > 0)) || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) b
    while :; do
        b=$(busy_pct)
        ((b < 15)) && return 0
        if ((SECONDS >= deadline)); then
            echo "WARN: machine ${b}% busy; measuring anyway" >&2; WARNS=$((WARNS + 1)); return 0
        fi
    done
}

# ---- daemons -------------------------------------------------------------------------------
declare -A DPID=() DREPO=() # key "<tool>-<name>" -> pid / repository
name_of() { echo "${1}-$(basename "$2")"; }
start_daemon() { # tool repo -> starts `<tool> assistant --foreground` attached, log under $LOGS
    local tool=$1 repo=$2 key
    key=$(name_of "$tool" "$repo")
    if [[ $tool == annex ]]; then
        (cd "$repo" && exec git annex assistant --foreground) >"$LOGS/$key.log" 2>&1 &
    else
        (cd "$repo" && exec "$FERRY" assistant --foreground "$repo") >"$LOGS/$key.log" 2>&1 &
    fi
    DPID[$key]=$!; DREPO[$key]=$repo
}
pids_of() { # tool... -> pids of the running daemons of those tools
    local k t out=()
    for k in "${!DPID[@]}"; do for t in "$@"; do [[ $k == "$t"-* ]] && out+=("${DPID[$k]}"); done; done
    echo "${out[*]}"
}
die_daemon() { # key what
    echo "ERROR: the $1 daemon (pid ${DPID[$1]}, ${DREPO[$1]}) $2. Last lines of its log:" >&2
    tail -n 25 "$LOGS/$1.log" | sed 's/^/  /' >&2
    exit 3
}
is_alive() { # pid: running, not a zombie waiting to be reaped
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [[ -n $st && $st != [ZX] ]]
}
assert_alive() { local k; for k in "${!DPID[@]}"; do is_alive "${DPID[$k]}" || die_daemon "$k" "exited"; done; }
stop_daemon() { # key [check]: --stop, then TERM, then KILL of what is left of its tree (by pid+start)
    local key=$1 pid=${DPID[$1]} repo=${DREPO[$1]} snap how=stop i
    snap=$(hp snap "$pid")
    if [[ $key == annex-* ]]; then
        (cd "$repo" && timeout 20 git annex assistant --stop) >>"$LOGS/$key.log" 2>&1 || true
    else
        timeout 20 "$FERRY" assistant --stop "$repo" >>"$LOGS/$key.log" 2>&1 || true
    fi
    for ((i = 0; i < 100; i++)); do is_alive "$pid" || break; sleep 0.1; done
    if is_alive "$pid"; then
        how=TERM; kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do is_alive "$pid" || break; sleep 0.1; done
    fi
    is_alive "$pid" && how=KILL
    # shellcheck disable=SC2086
    [[ -n $snap ]] && hp kill 9 $snap
    wait "$pid" 2>/dev/null || true
    unset "DPID[$key]" "DREPO[$key]"
    if [[ ${2:-} == check && $key == ferry-* ]]; then
        if [[ $how == stop ]]; then check "${key}_stops" ok; else check "${key}_stops" FAIL "assistant --stop did not end it within 10 s; needed $how"; fi
    elif [[ $how != stop ]]; then
        echo "WARN: $key did not stop on assistant --stop; sent $how" >&2
    fi
}
stop_all() { local k; for k in "${!DPID[@]}"; do stop_daemon "$k" "${1:-}"; done; }
cleanup() {
    stop_all 2>/dev/null || true
    if [[ $KEEP == 1 ]]; then echo "kept $WORK" >&2; else chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

waitidle() { # timeout quiet poll t0 tool... -> "<s> <cpu_ms>" | TIMEOUT | DEAD
    local timeout=$1 quiet=$2 poll=$3 t0=$4; shift 4
    # shellcheck disable=SC2046
    hp waitidle "$timeout" "$quiet" "$poll" "$t0" $(pids_of "$@")
}
settle() { # timeout tool...: wait for those daemons to be idle (2 s quiet), warn on timeout
    local timeout=$1 r k msg=""; shift
    local -A c0=()
    for k in "${!DPID[@]}"; do c0[$k]=$(hp cpu_ms "${DPID[$k]}"); done
    r=$(waitidle "$timeout" 2 0.25 "$(now)" "$@")
    case $r in
        DEAD*) assert_alive ;;
        TIMEOUT*)
            for k in "${!DPID[@]}"; do msg+=" $k $(($(hp cpu_ms "${DPID[$k]}") - c0[$k])) ms"; done
            echo "WARN: daemons ($*) not idle after ${timeout}s (CPU used meanwhile:$msg); measuring anyway" >&2
            WARNS=$((WARNS + 1)) ;;
    esac
}

# ---- repositories --------------------------------------------------------------------------
mkpair() { # tool dir: A (one file committed), B = clone of A, remotes both ways, both synced
    local tool=$1 d=$2
    mkdir -p "$d/A"; cd "$d/A"; git init -q
    echo seed >seed
    if [[ $tool == annex ]]; then
        git annex init -q A; git annex add -q seed >/dev/null; git commit -q -m seed
        git clone -q "$d/A" "$d/B"; (cd "$d/B" && git annex init -q B)
        git remote add B "$d/B"; git annex sync -q >/dev/null 2>&1
        (cd "$d/B" && git annex sync -q >/dev/null 2>&1)
    else
        "$FERRY" init A >/dev/null; "$FERRY" add -q seed; git commit -q -m seed
        git clone -q "$d/A" "$d/B"; (cd "$d/B" && "$FERRY" init B >/dev/null)
        git remote add B "$d/B"; "$FERRY" sync >/dev/null
        (cd "$d/B" && "$FERRY" sync >/dev/null)
    fi
    cd "$WORK"
}
ferry_status_check() { # repo: `ferry status --json` says running
    local out
    out=$(cd "$1" && timeout 10 "$FERRY" status --json 2>>"$LOGS/status.err") || true
    if hp running "$out"; then check "ferry_status_running_$(basename "$1")" ok
    else check "ferry_status_running_$(basename "$1")" FAIL "ferry status --json printed: $(echo "$out" | head -c 200)"; fi
}
start_pair() { # tool dir: start both daemons, wait until idle, report the small-repo startup time
    local tool=$1 d=$2 t0 r
    t0=$(now)
    start_daemon "$tool" "$d/A"; start_daemon "$tool" "$d/B"
    r=$(waitidle 120 3 0.1 "$t0" "$tool")
    [[ $r == DEAD* ]] && assert_alive
    echo "# $tool pair (both daemons) idle after startup: ${r%% *} s, ${r##* } ms CPU (small repo)"
    if [[ $tool == ferry ]]; then ferry_status_check "$d/A"; ferry_status_check "$d/B"; fi
}

jget() { hp jget "$1" "$2"; }

echo "# assistant benchmark $(date -u +%Y-%m-%dT%H:%MZ); $(git --version); git-annex $(git annex version --raw 2>/dev/null); nproc=$(nproc)"
echo "# tools: ${TOOLS[*]}; PHASES=\"$PHASES\" RUNS=$RUNS NBATCH=$NBATCH BATCH_RUNS=$BATCH_RUNS NIDLE=$NIDLE IDLE_S=$IDLE_S BIG_MB=$BIG_MB"
if want ferry; then
    echo "# ferry: $FERRY_SRC, mtime $(date -u -r "$FERRY_SRC" +%Y-%m-%dT%H:%MZ), sha256 $(sha256sum "$FERRY" | cut -c1-12), repo HEAD $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
fi

# ---- single + batch: propagation between two clones -----------------------------------------
if phase single || phase batch; then
    for t in "${TOOLS[@]}"; do mkpair "$t" "$WORK/$t-pair"; done
    sync
    for t in "${TOOLS[@]}"; do start_pair "$t" "$WORK/$t-pair"; done
    sleep 1

    if phase single; then
        declare -A SV=([annex]="" [ferry]="") SC=([annex]="" [ferry]="")
        declare -A SMISS=([annex]=0 [ferry]=0)
        for ((r = 1; r <= RUNS; r++)); do
            order=("${TOOLS[@]}")
            ((r % 2 == 0 && ${#TOOLS[@]} == 2)) && order=(ferry annex)
            for t in "${order[@]}"; do
                wait_quiet
                settle 30 "${TOOLS[@]}"
                j=$(hp probe "$WORK/$t-pair/A" "$WORK/$t-pair/B" "single$r-" 1 1024 0.005 "$SINGLE_TIMEOUT")
                v=$(jget "$j" all_visible); c=$(jget "$j" all_content)
                echo "# single run $r $t: visible in B after $v ms, content after $c ms"
                if [[ $c == NA ]]; then SMISS[$t]=$((SMISS[$t] + 1)); else SV[$t]+=" $v"; SC[$t]+=" $c"; fi
            done
            assert_alive
        done
        for t in "${TOOLS[@]}"; do
            # shellcheck disable=SC2086
            metric "${t}_assistant.single_1k_visible_in_B" ms ${SV[$t]}
            # shellcheck disable=SC2086
            metric "${t}_assistant.single_1k_content_in_B" ms ${SC[$t]}
            if ((SMISS[$t] == 0)); then check "${t}_single_all_content" ok
            else check "${t}_single_all_content" FAIL "${SMISS[$t]} of $RUNS without content in B within ${SINGLE_TIMEOUT}s"; fi
        done
    fi

    if phase batch; then
        declare -A BA=([annex]="" [ferry]="") BF=([annex]="" [ferry]="") BC=([annex]="" [ferry]="")
        for ((r = 1; r <= BATCH_RUNS; r++)); do
            # ferry first in odd runs: git-annex keeps uploading a batch's content for minutes
            # after the names are visible, and every run starts with all daemons idle.
            order=("${TOOLS[@]}")
            ((r % 2 == 1 && ${#TOOLS[@]} == 2)) && order=(ferry annex)
            for t in "${order[@]}"; do
                wait_quiet
                settle "$SETTLE_TIMEOUT" "${TOOLS[@]}"
                j=$(hp probe "$WORK/$t-pair/A/batch$r" "$WORK/$t-pair/B/batch$r" f "$NBATCH" 1024 0.02 "$BATCH_TIMEOUT")
                echo "# batch run $r $t: $j"
                v=$(jget "$j" all_visible); n=$(jget "$j" visible)
                c=$(jget "$j" all_content); nc=$(jget "$j" with_content)
                BA[$t]+=" $v"; BF[$t]+=" $(jget "$j" first_visible)"; BC[$t]+=" $c"
                if [[ $v == NA ]]; then check "${t}_batch${r}_all_visible" FAIL "$n of $NBATCH visible in B after ${BATCH_TIMEOUT}s"
                else check "${t}_batch${r}_all_visible" ok; fi
                if [[ $c == NA ]]; then check "${t}_batch${r}_all_content" FAIL "$nc of $NBATCH with content in B after ${BATCH_TIMEOUT}s"
                else check "${t}_batch${r}_all_content" ok; fi
            done
            assert_alive
        done
        for t in "${TOOLS[@]}"; do
            # shellcheck disable=SC2086
            metric "${t}_assistant.batch${NBATCH}_first_visible_in_B" ms ${BF[$t]}
            # shellcheck disable=SC2086
            metric "${t}_assistant.batch${NBATCH}_all_visible_in_B" ms ${BA[$t]}
            # shellcheck disable=SC2086
            metric "${t}_assistant.batch${NBATCH}_all_content_in_B" ms ${BC[$t]}
        done
    fi
    stop_all check
fi

# ---- bigsmall: a small file's content while a big one is on its way ----------------------------
if phase bigsmall; then
    declare -A BS=([annex]="" [ferry]="") BB=([annex]="" [ferry]="")
    declare -A BN=([annex]=0 [ferry]=0) BO=([annex]=0 [ferry]=0) BM=([annex]=0 [ferry]=0)
    for ((r = 1; r <= RUNS; r++)); do
        order=("${TOOLS[@]}")
        ((r % 2 == 0 && ${#TOOLS[@]} == 2)) && order=(ferry annex)
        for t in "${order[@]}"; do
            # A new pair each run, removed afterwards: three copies of a big file per clone pair
            # add up, and removing its content behind a running daemon's back confuses it.
            d=$WORK/$t-bigsmall$r
            mkpair "$t" "$d"
            hp mkbig "$WORK/big-staged" "$BIG_MB"
            sync
            wait_quiet
            start_pair "$t" "$d"
            j=$(hp bigsmall "$d/A" "$d/B" "$WORK/big-staged" big.bin "small-" 0.005 "$BIG_TIMEOUT" "$BIG_TIMEOUT" "$BIGSMALL_MAX")
            echo "# bigsmall run $r $t: $j"
            probes=$(hp jlist "$j" probes)
            BS[$t]+=" $probes"; BB[$t]+=" $(jget "$j" big_done)"
            BN[$t]=$((BN[$t] + $(wc -w <<<"$probes")))
            BO[$t]=$((BO[$t] + $(jget "$j" overlapped)))
            BM[$t]=$((BM[$t] + $(jget "$j" missed)))
            [[ $(jget "$j" in_flight) == NA ]] && echo "WARN: bigsmall run $r $t: the big file's content was never seen on its way into B" >&2
            assert_alive
            stop_daemon "$(name_of "$t" "$d/A")"; stop_daemon "$(name_of "$t" "$d/B")"
            chmod -R u+w "$d"; rm -rf "$d"
        done
    done
    for t in "${TOOLS[@]}"; do
        echo "# bigsmall $t: ${BN[$t]} probes started during the big transfers, ${BO[$t]} of them also ended before it did"
        # shellcheck disable=SC2086
        metric "${t}_assistant.bigsmall_1k_content_in_B" ms ${BS[$t]}
        # shellcheck disable=SC2086
        metric "${t}_assistant.bigsmall_big_content_in_B" ms ${BB[$t]}
        if ((BM[$t] > 0)); then check "${t}_bigsmall_all_content" FAIL "${BM[$t]} small files without content in B within ${BIG_TIMEOUT}s"
        elif ((BN[$t] == 0)); then check "${t}_bigsmall_all_content" FAIL "no small file was written while the big file was on its way"
        else check "${t}_bigsmall_all_content" ok; fi
    done
fi

# ---- idle: startup scan, idle CPU and RSS of one daemon in a repository of NIDLE files -----------
if phase idle; then
    hp mkfiles "$WORK/idle-src" "$NIDLE" 4096
    for t in "${TOOLS[@]}"; do
        d=$WORK/$t-idle
        mkdir -p "$d"; cp -a "$WORK/idle-src" "$d/data"; cd "$d"; git init -q
        t0=$(now)
        if [[ $t == annex ]]; then git annex init -q idle; git annex add -q data >/dev/null
        else "$FERRY" init idle >/dev/null; "$FERRY" add -q data; fi
        git commit -q -m data
        echo "# idle set-up: $t add + commit of $NIDLE files: $(secs "$t0" "$(now)") s"
        cd "$WORK"
    done
    sync
    for t in "${TOOLS[@]}"; do
        d=$WORK/$t-idle key=$t-$t-idle
        wait_quiet
        t0=$(now)
        start_daemon "$t" "$d"
        r=$(waitidle "$STARTUP_TIMEOUT" 5 0.1 "$t0" "$t")
        [[ $r == DEAD* ]] && die_daemon "$key" "exited during its startup scan"
        s=${r%% *} c=${r##* }
        [[ $s == TIMEOUT ]] && s=NA
        echo "# $t daemon, $NIDLE files: idle after ${s} s, ${c} ms CPU"
        metric "${t}_assistant.startup_to_idle_${NIDLE}files_solo" s "$s"
        metric "${t}_assistant.startup_cpu_${NIDLE}files_solo" ms "$c"
        [[ $t == ferry ]] && ferry_status_check "$d"
        c0=$(hp cpu_ms "${DPID[$key]}")
        sleep "$IDLE_S"
        is_alive "${DPID[$key]}" || die_daemon "$key" "exited while idle"
        c1=$(hp cpu_ms "${DPID[$key]}")
        rss=$(hp rss "${DPID[$key]}")
        metric "${t}_assistant.idle_cpu_${NIDLE}files_solo" "ms/${IDLE_S}s" "$((c1 - c0))"
        metric "${t}_assistant.rss_tree_${NIDLE}files_solo" KiB "$rss"
        stop_daemon "$key" check
    done
fi

# ---- ratios and table ----------------------------------------------------------------------
rows=()
row() { # label metric-suffix unit [floor for a zero ferry value]
    local a=${MED[annex_assistant.$2]:-NA} f=${MED[ferry_assistant.$2]:-NA} x
    [[ -z ${MED[annex_assistant.$2]+x} && -z ${MED[ferry_assistant.$2]+x} ]] && return 0
    x=$(rat "$a" "$f" "${4:-0}")
    [[ $a != NA && $f != NA ]] && echo "METRIC assistant.$2.annex_over_ferry=$x"
    rows+=("$(printf '| %-44s | %12s | %12s | %10s |' "$1 ($3)" "$a" "$f" "$x")")
}
row "single 1 KiB file visible in B, median" single_1k_visible_in_B ms 1
row "$NBATCH x 1 KiB: first visible in B" "batch${NBATCH}_first_visible_in_B" ms 1
row "$NBATCH x 1 KiB: all visible in B" "batch${NBATCH}_all_visible_in_B" ms 1
row "single 1 KiB file: content in B, median" single_1k_content_in_B ms 1
row "$NBATCH x 1 KiB: all content in B" "batch${NBATCH}_all_content_in_B" ms 1
row "1 KiB content in B during $BIG_MB MiB, median" bigsmall_1k_content_in_B ms 1
row "$BIG_MB MiB file: content in B" bigsmall_big_content_in_B ms 1
row "startup to idle, $NIDLE files" "startup_to_idle_${NIDLE}files_solo" s 0.1
row "startup CPU, $NIDLE files" "startup_cpu_${NIDLE}files_solo" ms 10
row "idle CPU over ${IDLE_S} s, $NIDLE files" "idle_cpu_${NIDLE}files_solo" ms 10
row "RSS of daemon tree, $NIDLE files" "rss_tree_${NIDLE}files_solo" KiB
echo
printf '| %-44s | %12s | %12s | %10s |\n' measurement git-annex ferry annex/ferry
echo "|----------------------------------------------|-------------:|-------------:|-----------:|"
printf '%s\n' "${rows[@]}"
echo
echo "# ratios above 1 mean ferry is faster / lighter; '>=' marks a ferry value of 0, bounded by the measurement resolution"
((WARNS == 0)) || echo "# $WARNS WARN(s): machine busy or daemons not idle before a step; see stderr"
exit "$FAILED"
