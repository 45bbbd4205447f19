#!/usr/bin/env bash
# Compare hermod's POP3 download with Dovecot's on this machine: the same MESSAGES x SIZE
# messages (the same Maildir files for both), the same client (pop3_bench --server --tls),
# one connection over implicit TLS (the POP3S port, the same ECDSA P-256 certificate for
# both), USER/PASS, RETR 1..N; hermod and Dovecot runs alternate, each run starting its
# server fresh on a fresh copy of the maildrop. A benchmark only: not part of CI.
#
#   apt-get install -y dovecot-pop3d      # once; Dovecot is only the yardstick
#   pop3d/examples/compare_dovecot.sh [RUNS] [MESSAGES] [SIZE]
#
# hermod runs as `hermod serve` (release build) with its user made by `hermod user add`;
# Dovecot as its own master (passwd-file, {PLAIN} password), config from
# bench/dovecot_conf.sh. Each client run logs in twice: the first login finds the files new
# (both servers index them), the second finds them indexed; both are printed and their
# medians kept apart. Every client run's raw output goes to bench/results/. Run as root:
# Dovecot switches to the mail user `nobody`.
set -euo pipefail

RUNS=${1:-3}
MESSAGES=${2:-10000}
SIZE=${3:-5120}
BASE_PORT=${BASE_PORT:-22900} # hermod's listeners BASE_PORT .. +8; POP3S is BASE_PORT+6
DOVECOT_PORT=${DOVECOT_PORT:-22995}

cd "$(dirname "$0")/../.."
. bench/lib.sh
. bench/dovecot_conf.sh
build -p hermod-pop3d --example pop3_bench
BENCH=$TARGET/examples/pop3_bench
DIR=$(mktemp -d /tmp/pop3-compare.XXXXXX)
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
"$BENCH" --write-maildir "$DIR/template" --messages "$MESSAGES" --size "$SIZE"

run_hermod() {
    local h=$DIR/hermod-$1
    mkdir -p "$h"
    hermod_conf "$BASE_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$h/hermod.toml"
    H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
    "$HERMOD" "${H[@]}" domain add example.org >/dev/null
    echo benchpw | "$HERMOD" "${H[@]}" user add bench@example.org --password-stdin >/dev/null
    # Into the Maildir `user add` may have made: hermod indexes the files at the first login.
    mkdir -p "$h/data/mail/example.org/bench/Maildir"
    cp -a "$DIR/template/." "$h/data/mail/example.org/bench/Maildir/"
    "$HERMOD" "${H[@]}" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port $((BASE_PORT + 6))
    record pop3-hermod "$BENCH" --server "127.0.0.1:$((BASE_PORT + 6))" --tls \
        --user bench@example.org --password benchpw | sed 's/^/hermod  /' | tee -a "$DIR/hermod.txt"
    stop_pid "$HERMOD_PID"
    HERMOD_PID=
    [ -n "${KEEP:-}" ] || rm -rf "$h"
}

run_dovecot() {
    local d=$DIR/dovecot-$1
    mkdir -p "$d"/{run,state,home/bench/Maildir}
    cp -a "$DIR/template/." "$d/home/bench/Maildir/"
    chown -R nobody:nogroup "$d/home"
    echo "bench@example.org:{PLAIN}benchpw:$(id -u nobody):$(id -g nobody)::$d/home/bench" >"$d/passwd"
    dovecot_conf "$d" pop3 "$DOVECOT_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$d/dovecot.conf"
    dovecot -c "$d/dovecot.conf"
    DOVECOT_DIR=$d
    wait_port "$DOVECOT_PORT"
    record pop3-dovecot "$BENCH" --server "127.0.0.1:$DOVECOT_PORT" --tls \
        --user bench@example.org --password benchpw | sed 's/^/dovecot /' | tee -a "$DIR/dovecot.txt"
    stop_dovecot "$d"
    DOVECOT_DIR=
    [ -n "${KEEP:-}" ] || rm -rf "$d"
}

for run in $(seq 1 "$RUNS"); do
    echo "== run $run of $RUNS"
    run_hermod "$run"
    run_dovecot "$run"
done

echo "== POP3 medians of $RUNS runs ($MESSAGES x $SIZE bytes, TLS, one connection)"
for s in hermod dovecot; do
    f=$DIR/$s.txt
    grep 'first login' "$f" >"$f.first" || true
    grep 'second login' "$f" >"$f.second" || true
    echo "$s: first login $(median "$f.first" ' \([0-9.]*\) messages/s') messages/s" \
        "($(median "$f.first" ' \([0-9.]*\) MB/s') MB/s), second login" \
        "$(median "$f.second" ' \([0-9.]*\) messages/s') messages/s ($(median "$f.second" ' \([0-9.]*\) MB/s') MB/s)"
done
