#!/usr/bin/env bash
# Moving one big file between two local clones: `ferry get` against `git annex get` and against
# plain `cp` (with and without an fsync of the copy), in one run, alternating tools per run;
# then NSMALL small files (1 KiB each), `ferry get` against `git annex get`.
# ferry's get copies into .git/annex/tmp, hashes while copying, fsyncs, renames into the store
# and records the location log; `cp` + fsync is the floor for a durable copy.
#
# Knobs: SIZE_MB=256 NSMALL=1000 (0 skips the small files) RUNS=3 FERRY=<binary> (default
# target/release/ferry, built if missing)
# Output: `RESULT name=median s` lines, ratio lines ending in x, `CHECK` lines, then a table.
# Throughput ratios (`..._throughput_vs_...`) are anchor time / ferry time: 0.80 means ferry moves
# the bytes at 80% of the anchor's speed. The target is >= 0.80; `cp` + fsync is the fair
# anchor (ferry must fsync, and verify the hash, which `cp` does not), plain `cp` is reported too.
set -euo pipefail
SIZE_MB=${SIZE_MB:-256}
NSMALL=${NSMALL:-1000}
RUNS=${RUNS:-3}
SCRATCH_NAME=transfer
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
echo "# transfer benchmark $(date -u +%Y-%m-%dT%H:%MZ); $(git --version); git-annex $(git annex version --raw 2>/dev/null); SIZE_MB=$SIZE_MB NSMALL=$NSMALL RUNS=$RUNS"

cd "$WORK"
head -c $((SIZE_MB << 20)) /dev/urandom >"$WORK/big.bin"
# The source: a ferry repository holding the file (git-annex reads it as well).
mkdir src && cd src && git init -q && "$FERRY" init src >/dev/null
cp "$WORK/big.bin" big.bin && "$FERRY" add big.bin >/dev/null && git commit -q -m big
OBJ=$(readlink -f big.bin)
cd "$WORK"
git clone -q src fdst && (cd fdst && "$FERRY" init fdst >/dev/null)
git clone -q src adst && (cd adst && git annex init -q adst)
WANT=$(sha256sum <"$WORK/big.bin" | cut -d' ' -f1)

check() { # name file
    if [[ $(sha256sum <"$2" | cut -d' ' -f1) == "$WANT" ]]; then echo "CHECK $1=ok"; else echo "CHECK $1=FAIL"; exit 1; fi
}

t_ferry() {
    cd "$WORK/fdst"
    [[ ! -e big.bin ]] || "$FERRY" drop big.bin >/dev/null
    sync
    local t0 t1; t0=$(now)
    "$FERRY" get big.bin >/dev/null
    t1=$(now); check ferry_get big.bin >&2; secs "$t0" "$t1"
}
t_annex() {
    cd "$WORK/adst"
    [[ ! -e big.bin ]] || git annex drop -q big.bin
    sync
    local t0 t1; t0=$(now)
    git annex get -q big.bin
    t1=$(now); check annex_get big.bin >&2; secs "$t0" "$t1"
}
t_cp() { # fsync: 1 to fsync the copy
    rm -f "$WORK/cp.out"; sync
    local t0 t1; t0=$(now)
    cp "$OBJ" "$WORK/cp.out"
    [[ $1 == 1 ]] && sync "$WORK/cp.out"
    t1=$(now); check "cp_fsync$1" "$WORK/cp.out" >&2; secs "$t0" "$t1"
}

f=() a=() c=() cs=()
for ((r = 1; r <= RUNS; r++)); do
    if ((r % 2)); then f+=("$(t_ferry)"); a+=("$(t_annex)"); else a+=("$(t_annex)"); f+=("$(t_ferry)"); fi
    c+=("$(t_cp 0)"); cs+=("$(t_cp 1)")
done
mf=$(printf '%s\n' "${f[@]}" | median)
ma=$(printf '%s\n' "${a[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
mcs=$(printf '%s\n' "${cs[@]}" | median)
echo "RESULT transfer.ferry_get=$mf s (runs: ${f[*]})"
echo "RESULT transfer.annex_get=$ma s (runs: ${a[*]})"
echo "RESULT transfer.cp=$mc s (runs: ${c[*]})"
echo "RESULT transfer.cp_fsync=$mcs s (runs: ${cs[*]})"
echo "RESULT transfer.annex_over_ferry=$(ratio "$ma" "$mf")x"
echo "RESULT transfer.ferry_over_cp_fsync=$(ratio "$mf" "$mcs")x"
echo "RESULT transfer.ferry_over_cp=$(ratio "$mf" "$mc")x"
echo "RESULT transfer.ferry_throughput_vs_cp_fsync=$(ratio "$mcs" "$mf")x"
echo "RESULT transfer.ferry_throughput_vs_cp=$(ratio "$mc" "$mf")x"
verdict() { awk -v r="$1" 'BEGIN {print (r >= 0.80) ? "PASS" : "not met"}'; }
mbps() { awk -v s="$1" -v m="$SIZE_MB" 'BEGIN {printf "%.0f", m/s}'; }
echo
echo "| $SIZE_MB MiB, median of $RUNS | seconds | MiB/s | vs ferry get |"
echo "|---|---|---|---|"
echo "| ferry get | $mf | $(mbps "$mf") | 1.00x |"
echo "| git annex get | $ma | $(mbps "$ma") | $(ratio "$ma" "$mf")x |"
echo "| cp + fsync | $mcs | $(mbps "$mcs") | $(ratio "$mcs" "$mf")x |"
echo "| cp (no fsync) | $mc | $(mbps "$mc") | $(ratio "$mc" "$mf")x |"
echo
echo "| ferry get throughput, as a share of | ratio | target | verdict |"
echo "|---|---|---|---|"
echo "| cp + fsync (durable copy) | $(ratio "$mcs" "$mf")x | >= 0.80 | $(verdict "$(ratio "$mcs" "$mf")") |"
echo "| cp (no fsync) | $(ratio "$mc" "$mf")x | >= 0.80 | $(verdict "$(ratio "$mc" "$mf")") |"

((NSMALL > 0)) || exit 0

# Many small files: per-file overhead (locks, info files, fsyncs, location logs).
cd "$WORK"
mkdir small && cd small && git init -q && "$FERRY" init small >/dev/null
for i in $(seq "$NSMALL"); do head -c 1024 /dev/urandom >"f$i"; done
"$FERRY" add . >/dev/null 2>&1 && git commit -q -m small
cd "$WORK"
git clone -q small sf && (cd sf && "$FERRY" init sf >/dev/null)
git clone -q small sa && (cd sa && git annex init -q sa)
t_small() { # tool
    local t0 t1
    if [[ $1 == ferry ]]; then
        cd "$WORK/sf"; "$FERRY" drop . >/dev/null 2>&1 || true; sync
        t0=$(now); "$FERRY" get >/dev/null; t1=$(now)
        [[ $(cat f1 f"$NSMALL" | wc -c) == 2048 ]] || { echo "CHECK ferry_small=FAIL" >&2; exit 1; }
    else
        cd "$WORK/sa"; git annex drop -q . 2>/dev/null || true; sync
        t0=$(now); git annex get -q .; t1=$(now)
        [[ $(cat f1 f"$NSMALL" | wc -c) == 2048 ]] || { echo "CHECK annex_small=FAIL" >&2; exit 1; }
    fi
    secs "$t0" "$t1"
}
sf=() sa=()
for ((r = 1; r <= RUNS; r++)); do
    if ((r % 2)); then sf+=("$(t_small ferry)"); sa+=("$(t_small annex)"); else sa+=("$(t_small annex)"); sf+=("$(t_small ferry)"); fi
done
msf=$(printf '%s\n' "${sf[@]}" | median)
msa=$(printf '%s\n' "${sa[@]}" | median)
echo
echo "RESULT transfer.small_ferry_get=$msf s (runs: ${sf[*]})"
echo "RESULT transfer.small_annex_get=$msa s (runs: ${sa[*]})"
echo "RESULT transfer.small_annex_over_ferry=$(ratio "$msa" "$msf")x"
echo
echo "| $NSMALL files of 1 KiB, median of $RUNS | seconds | files/s | vs ferry get |"
echo "|---|---|---|---|"
echo "| ferry get | $msf | $(awk -v s="$msf" -v n="$NSMALL" 'BEGIN {printf "%.0f", n/s}') | 1.00x |"
echo "| git annex get | $msa | $(awk -v s="$msa" -v n="$NSMALL" 'BEGIN {printf "%.0f", n/s}') | $(ratio "$msa" "$msf")x |"
