#!/usr/bin/env bash
# Compare hermod's IMAP server with Dovecot's under the same mixed load on this machine:
# the same client (imap_load), CLIENTS users loadK@example.org each with a folder of MESSAGES
# messages (the same files for both servers), over implicit TLS (the IMAPS port, the same
# ECDSA P-256 certificate for both) with real LOGINs; hermod and Dovecot runs alternate, and
# each run starts its server fresh on a fresh copy of the data. A benchmark only: not part
# of CI.
#
#   apt-get install -y dovecot-imapd      # once; Dovecot is only the yardstick
#   imapd/examples/compare_dovecot.sh [RUNS] [SECONDS] [CLIENTS] [MESSAGES]
#
# hermod runs as `hermod serve` (release build) with users made by `hermod user add`
# (argon2id); Dovecot as its own master (passwd-file, {PLAIN} passwords), config from
# bench/dovecot_conf.sh. imap_load's top comment says what one round of the load is; the
# handshakes, LOGINs and first SELECTs (which build both servers' indexes) happen before
# the measured window. Server CPU: hermod's one process; Dovecot's imap, imap-login (which
# does the TLS) and auth processes, and also its whole process tree. Every client run's raw
# output goes to bench/results/; the medians are printed at the end. Run as root: Dovecot
# switches to the mail user `nobody`.
set -euo pipefail

RUNS=${1:-3}
SECS=${2:-30}
CLIENTS=${3:-20}
MESSAGES=${4:-1000}
BASE_PORT=${BASE_PORT:-22800} # hermod's listeners BASE_PORT .. +8; IMAPS is BASE_PORT+4
DOVECOT_PORT=${DOVECOT_PORT:-22993}

cd "$(dirname "$0")/../.."
. bench/lib.sh
. bench/dovecot_conf.sh
build -p hermod-imapd --example imap_load
LOAD=$TARGET/examples/imap_load
DIR=$(mktemp -d /tmp/imap-compare.XXXXXX)
HERMOD_PID=
DOVECOT_DIR=
cleanup() {
    [ -z "$HERMOD_PID" ] || stop_pid "$HERMOD_PID"
    [ -z "$DOVECOT_DIR" ] || stop_dovecot "$DOVECOT_DIR"
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
chmod 755 "$DIR"
make_cert "$DIR"
"$LOAD" write-maildir "$DIR/template" --messages "$MESSAGES"

run_hermod() {
    local h=$DIR/hermod-$1 k
    mkdir -p "$h"
    hermod_conf "$BASE_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$h/hermod.toml"
    H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
    "$HERMOD" "${H[@]}" domain add example.org >/dev/null
    for k in $(seq 0 $((CLIENTS - 1))); do
        echo secret | "$HERMOD" "${H[@]}" user add "load$k@example.org" --password-stdin >/dev/null
        # Into the Maildir `user add` may have made: hermod indexes the files when it
        # first opens the folder.
        mkdir -p "$h/data/mail/example.org/load$k/Maildir"
        cp -a "$DIR/template/." "$h/data/mail/example.org/load$k/Maildir/"
    done
    "$HERMOD" "${H[@]}" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port $((BASE_PORT + 4))
    record imap-hermod "$LOAD" --port $((BASE_PORT + 4)) --clients "$CLIENTS" --secs "$SECS" \
        --server-pid "$HERMOD_PID" | sed 's/^/hermod  /' | tee -a "$DIR/hermod.txt"
    stop_pid "$HERMOD_PID"
    HERMOD_PID=
    [ -n "${KEEP:-}" ] || rm -rf "$h"
}

run_dovecot() {
    local d=$DIR/dovecot-$1 k
    mkdir -p "$d"/{run,state,home}
    for k in $(seq 0 $((CLIENTS - 1))); do
        echo "load$k@example.org:{PLAIN}secret:$(id -u nobody):$(id -g nobody)::$d/home/load$k"
        mkdir -p "$d/home/load$k/Maildir"
        cp -a "$DIR/template/." "$d/home/load$k/Maildir/"
    done >"$d/passwd"
    chown -R nobody:nogroup "$d/home"
    dovecot_conf "$d" imap "$DOVECOT_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$d/dovecot.conf"
    dovecot -c "$d/dovecot.conf"
    DOVECOT_DIR=$d
    wait_port "$DOVECOT_PORT"
    record imap-dovecot "$LOAD" --port "$DOVECOT_PORT" --clients "$CLIENTS" --secs "$SECS" \
        --server-pid "$(cat "$d/run/master.pid")" | sed 's/^/dovecot /' | tee -a "$DIR/dovecot.txt"
    stop_dovecot "$d"
    DOVECOT_DIR=
    [ -n "${KEEP:-}" ] || rm -rf "$d"
}

for run in $(seq 1 "$RUNS"); do
    echo "== run $run of $RUNS"
    run_hermod "$run"
    run_dovecot "$run"
done

echo "== IMAP medians of $RUNS runs ($CLIENTS clients, $MESSAGES messages per folder, TLS, $SECS s)"
for s in hermod dovecot; do
    f=$DIR/$s.txt
    echo "$s: $(median "$f" ' \([0-9.]*\) commands/s') commands/s;" \
        "server CPU $(median "$f" 's, \([0-9.]*\) µs per command (serving') µs per command" \
        "(whole tree $(median "$f" 'tree [0-9.]* s, \([0-9.]*\) µs') µs)"
done
