#!/usr/bin/env bash
# Memory per idle IMAP connection (STARTTLS, logged in, INBOX SELECTed, in IDLE), logins
# arriving INFLIGHT at once, at each connection count given, against hermod and (for counts
# up to DOVECOT_MAX) a throw-away Dovecot 2.3; and what each server keeps after the
# connections close. Each count starts the server fresh. The client is
# bench/imap_idle_memory.py; its output says what is measured. A benchmark only.
#
#   bench/idle_memory.sh [COUNTS...]        # default: 1000 10000; as root
#
# hermod: release build, 2 users made by `hermod user add` (argon2id), 20 messages in each
# INBOX, connection limits raised to 20000. Dovecot: {PLAIN} passwords, process limits
# raised (it runs an imap-login process, which holds the TLS, and an imap process per
# connection). `ulimit -n` must allow 2 x the largest count. SKIP_HERMOD=1: Dovecot only;
# DOVECOT_MAX=0: hermod only.
set -euo pipefail

COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
INFLIGHT=${INFLIGHT:-50}
BASE_PORT=${BASE_PORT:-41420}  # hermod's listeners BASE_PORT .. +8; IMAP (STARTTLS) at +3
DOVECOT_PORT=${DOVECOT_PORT:-41494}
DOVECOT_MAX=${DOVECOT_MAX:-1000}

cd "$(dirname "$0")/.."
. bench/lib.sh
. bench/dovecot_conf.sh
build
ulimit -n 20000
DIR=$(mktemp -d /tmp/idle-memory.XXXXXX)
HERMOD_PID=
DOVECOT_DIR=
cleanup() {
    [ -z "$HERMOD_PID" ] || stop_pid "$HERMOD_PID"
    [ -z "$DOVECOT_DIR" ] || stop_dovecot "$DOVECOT_DIR"
    rm -rf "$DIR"
}
trap cleanup EXIT
chmod 755 "$DIR"
make_cert "$DIR"

run_hermod() {
    local n=$1 h=$DIR/hermod u i
    mkdir -p "$h"
    hermod_conf "$BASE_PORT" "$DIR/cert.pem" "$DIR/key.pem" |
        sed 's/^max_connections_per_ip = .*/max_connections = 20000\nmax_connections_per_ip = 20000/' \
            >"$h/hermod.toml"
    H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
    "$HERMOD" "${H[@]}" domain add example.org >/dev/null
    for u in load0 load1; do
        echo secret | "$HERMOD" "${H[@]}" user add "$u@example.org" --password-stdin >/dev/null
        for i in $(seq 1 20); do
            printf 'From: a@example.org\r\nSubject: m%s\r\n\r\nbody\r\n' "$i" |
                "$HERMOD" "${H[@]}" deliver --recipient "$u@example.org" >/dev/null
        done
    done
    "$HERMOD" "${H[@]}" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port $((BASE_PORT + 3))
    record idle-memory-hermod-$n python3 bench/imap_idle_memory.py "$HERMOD_PID" \
        $((BASE_PORT + 3)) "$n" --inflight "$INFLIGHT" | sed 's/^/hermod  /'
    stop_pid "$HERMOD_PID"
    HERMOD_PID=
    rm -rf "$h"
}

run_dovecot() {
    local n=$1 d=$DIR/dovecot u i
    mkdir -p "$d"/{run,state,home}
    for u in load0 load1; do
        echo "$u@example.org:{PLAIN}secret:$(id -u nobody):$(id -g nobody)::$d/home/$u"
        mkdir -p "$d/home/$u/Maildir"/{cur,new,tmp}
        for i in $(seq 1 20); do
            printf 'From: a@example.org\r\nSubject: m%s\r\n\r\nbody\r\n' "$i" \
                >"$d/home/$u/Maildir/new/$i.bench"
        done
    done >"$d/passwd"
    chown -R nobody:nogroup "$d/home"
    # STARTTLS on the plain listener (dovecot_conf's plain mode has ssl = no).
    dovecot_conf "$d" imap "$DOVECOT_PORT" | sed 's/^ssl = no/ssl = yes/' >"$d/dovecot.conf"
    cat >>"$d/dovecot.conf" <<EOF
ssl_cert = <$DIR/cert.pem
ssl_key = <$DIR/key.pem
default_process_limit = 20000
default_client_limit = 40000
default_vsz_limit = 0
protocol imap {
  mail_max_userip_connections = 20000
}
EOF
    dovecot -c "$d/dovecot.conf"
    DOVECOT_DIR=$d
    wait_port "$DOVECOT_PORT"
    record idle-memory-dovecot-$n python3 bench/imap_idle_memory.py "$(cat "$d/run/master.pid")" \
        "$DOVECOT_PORT" "$n" --inflight "$INFLIGHT" | sed 's/^/dovecot /'
    stop_dovecot "$d"
    DOVECOT_DIR=
    rm -rf "$d"
}

for n in "${COUNTS[@]}"; do
    [ -n "${SKIP_HERMOD:-}" ] || run_hermod "$n"
    [ "$n" -gt "$DOVECOT_MAX" ] || run_dovecot "$n"
done
