# Shared set-up for the bench scripts (sourced, not run): a private scratch dir and git config,
# a copy of the ferry binary under test, and small helpers for timing and medians.
# The sourcing script sets SCRATCH_NAME first.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The binary of the checked-out source (built, or rebuilt when stale), unless FERRY names one.
if [[ -n ${FERRY:-} ]]; then
    FERRY_SRC=$FERRY
else
    FERRY_SRC=$ROOT/target/release/ferry
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p ferry-cli
fi
WORK=$(mktemp -d "/tmp/ferry-bench-${SCRATCH_NAME:-x}-XXXX")
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
# A copy, so a concurrent cargo build cannot swap the binary mid-run.
cp "$FERRY_SRC" "$WORK/ferry"
FERRY=$WORK/ferry
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
export GIT_CONFIG_GLOBAL=$HOME/.gitconfig
git config --global user.name bench
git config --global user.email bench@ferry.invalid
git config --global gc.auto 0
git config --global maintenance.auto false

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f\n", b-a}'; }
