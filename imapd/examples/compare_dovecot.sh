#!/usr/bin/env bash
# Compare hermod's IMAP mixed load with Dovecot's on this machine: the same client (`bench
# mixed`), 50 clients each its own user doing APPEND, FETCH, STORE, SEARCH and EXPUNGE,
# alternating hermod and Dovecot runs. A benchmark only: not part of CI.
#
#   apt-get install -y dovecot-imapd      # once; Dovecot is only the yardstick
#   imapd/examples/compare_dovecot.sh [RUNS] [SECONDS]
#
# hermod runs fresh for each run (`bench hermod-mixed`: a child process on a temporary data
# dir); Dovecot as its own master with a config in a temporary directory, plain TCP and
# passwd-file users load0..load49@localhost. Both report commands/s and the server's CPU
# time per command. Run as root: Dovecot switches to the mail user `nobody`.
set -euo pipefail

RUNS=${1:-3}
SECS=${2:-30}
DOVECOT_PORT=${DOVECOT_PORT:-21143}

cd "$(dirname "$0")/../.."
. bench/dovecot_conf.sh
cargo build --release -p hermod-imapd --example bench
BENCH=$PWD/target/release/examples/bench
DIR=$(mktemp -d /tmp/imap-compare.XXXXXX)
cleanup() {
    [ -f "$DIR/run/master.pid" ] && kill "$(cat "$DIR/run/master.pid")" 2>/dev/null || true
    sleep 1
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR"/{run,state,home}
chown nobody:nogroup "$DIR/home"
chmod 755 "$DIR"
for k in $(seq 0 49); do
    echo "load$k@localhost:{PLAIN}secret:$(id -u nobody):$(id -g nobody)::$DIR/home/load$k"
done >"$DIR/passwd"
dovecot_conf "$DIR" imap "$DOVECOT_PORT" >"$DIR/dovecot.conf"
dovecot -c "$DIR/dovecot.conf"
sleep 1
MASTER=$(cat "$DIR/run/master.pid")

for run in $(seq 1 "$RUNS"); do
    echo "== run $run"
    "$BENCH" hermod-mixed "$SECS" | tail -2 | sed 's/^/hermod  /'
    "$BENCH" mixed "$DOVECOT_PORT" "$SECS" "$MASTER" | tail -2 | sed 's/^/dovecot /'
done
