#!/usr/bin/env bash
# Compare hermod's POP3 download with Dovecot's on this machine: the same 10,000 x 5 KB
# messages, the same client (pop3_bench --server), one connection, RETR 1..N, alternating
# hermod and Dovecot runs, medians at the end. A benchmark only: not part of CI.
#
#   apt-get install -y dovecot-pop3d      # once; Dovecot is only the yardstick
#   pop3d/examples/compare_dovecot.sh [RUNS] [MESSAGES] [SIZE]
#
# Both servers run as separate processes on loopback (hermod: `pop3_bench --serve-only`,
# Dovecot: its own master with a config in a temporary directory, plain TCP, a
# passwd-file user). Run as root: Dovecot switches to the mail user `nobody`. Each client
# run logs in twice; after a warm-up run of each (Dovecot builds its index, hermod its
# size cache) every login counts as one sample. Both servers are stopped at the end.
set -euo pipefail

RUNS=${1:-3}
MESSAGES=${2:-10000}
SIZE=${3:-5120}
HERMOD_PORT=${HERMOD_PORT:-21111}
DOVECOT_PORT=${DOVECOT_PORT:-21110}

cd "$(dirname "$0")/../.."
. bench/dovecot_conf.sh
cargo build --release -p hermod-pop3d --example pop3_bench
BENCH=$PWD/target/release/examples/pop3_bench
DIR=$(mktemp -d /tmp/pop3-compare.XXXXXX)
HERMOD_PID=
cleanup() {
    [ -n "$HERMOD_PID" ] && kill -INT "$HERMOD_PID" 2>/dev/null && wait "$HERMOD_PID" || true
    [ -f "$DIR/run/master.pid" ] && kill "$(cat "$DIR/run/master.pid")" 2>/dev/null || true
    sleep 1
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR"/{run,state,home}
"$BENCH" --write-maildir "$DIR/home/bench/Maildir" --messages "$MESSAGES" --size "$SIZE"
chown -R nobody:nogroup "$DIR/home"
chmod 755 "$DIR" "$DIR/home"
echo "bench:{PLAIN}benchpw:$(id -u nobody):$(id -g nobody)::$DIR/home/bench" >"$DIR/passwd"
dovecot_conf "$DIR" pop3 "$DOVECOT_PORT" >"$DIR/dovecot.conf"
dovecot -c "$DIR/dovecot.conf"

"$BENCH" --serve-only "127.0.0.1:$HERMOD_PORT" --messages "$MESSAGES" --size "$SIZE" \
    >"$DIR/hermod.log" 2>&1 &
HERMOD_PID=$!
until grep -q "serving on" "$DIR/hermod.log"; do
    kill -0 "$HERMOD_PID" || { cat "$DIR/hermod.log"; exit 1; }
    sleep 0.5
done

hermod() { "$BENCH" --server "127.0.0.1:$HERMOD_PORT" --user bench@localhost --password "bench password"; }
dovecot_run() { "$BENCH" --server "127.0.0.1:$DOVECOT_PORT" --user bench --password benchpw; }

hermod >/dev/null
dovecot_run >/dev/null
for i in $(seq 1 "$RUNS"); do
    echo "run $i (load $(cut -d' ' -f1 /proc/loadavg))"
    hermod | sed 's/^/  hermod  /' | tee -a "$DIR/hermod.txt"
    dovecot_run | sed 's/^/  dovecot /' | tee -a "$DIR/dovecot.txt"
done

median() {
    # $1: file of result lines; $2: the unit that follows the figure.
    grep -o "[0-9.]* $2" "$1" | cut -d' ' -f1 | sort -n |
        awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
echo "medians of $((RUNS * 2)) logins each:"
for s in hermod dovecot; do
    echo "  $s: $(median "$DIR/$s.txt" messages/s) messages/s, $(median "$DIR/$s.txt" MB/s) MB/s"
done
