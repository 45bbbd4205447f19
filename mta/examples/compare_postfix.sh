#!/usr/bin/env bash
# Compare hermod's SMTP intake and delivery with Postfix's on this machine: the same client
# (smtp_load --target), MESSAGES messages of 5 KB over 20 connections to 20 recipients
# user0..user19@example.org, delivered into Maildirs; hermod and Postfix runs alternate,
# each server started fresh (new data dir) for its run and stopped after it. A benchmark
# only: not part of CI.
#
#   apt-get install -y postfix            # once; Postfix is only the yardstick
#   mta/examples/compare_postfix.sh [RUNS] [MESSAGES] [RATE]
#
# Each run is a closed loop (every connection sends its next message once the last got its
# 250: the most each server takes), then an open loop at RATE msg/s offered (default 600),
# so latencies are compared at the same load. smtp_load prints the accepted rate (until the
# last 250), the delivered rate (until every message is a file in a Maildir's new/, polled
# every 20 ms) and latency percentiles from each message's due time to its final 250.
# hermod runs as `hermod serve` (release build, its own process), Postfix as its own master
# with `virtual` delivery; configs and data in a temporary directory, loopback ports only.
# Every client run's raw output goes to bench/results/ (see bench/lib.sh `record`); the
# medians are printed at the end. Run as root (Postfix's daemons switch users).
set -euo pipefail

RUNS=${1:-3}
MESSAGES=${2:-10000}
RATE=${3:-600}
HERMOD_PORT=${HERMOD_PORT:-22525} # hermod's other listeners: HERMOD_PORT+1 .. +8
POSTFIX_PORT=${POSTFIX_PORT:-22625}

cd "$(dirname "$0")/../.."
. bench/lib.sh
build -p hermod-mta --example smtp_load
LOAD=$TARGET/examples/smtp_load
DIR=$(mktemp -d /tmp/smtp-compare.XXXXXX)
HERMOD_PID=
PF=
cleanup() {
    [ -z "$HERMOD_PID" ] || stop_pid "$HERMOD_PID"
    [ -z "$PF" ] || postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
chmod 755 "$DIR"

# A fresh hermod in $DIR/hermod-RUN: domain, 20 users, `hermod serve`.
start_hermod() {
    local h=$DIR/hermod-$1 i
    mkdir -p "$h"
    hermod_conf "$HERMOD_PORT" >"$h/hermod.toml"
    H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
    "$HERMOD" "${H[@]}" domain add example.org >/dev/null
    for i in $(seq 0 19); do
        echo "password $i" | "$HERMOD" "${H[@]}" user add "user$i@example.org" --password-stdin >/dev/null
    done
    "$HERMOD" "${H[@]}" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port "$HERMOD_PORT"
    MAILDIRS=$h/data/mail
}

# A fresh Postfix in $DIR/postfix-RUN: only our loopback smtpd, `virtual` delivery.
start_postfix() {
    local i
    PF=$DIR/postfix-$1
    mkdir -p "$PF"/{etc,spool,lib,vmail}
    cp /etc/postfix/master.cf "$PF/etc/master.cf"
    sed -i "s/^smtp\s\+inet/127.0.0.1:$POSTFIX_PORT inet/" "$PF/etc/master.cf"
    for i in $(seq 0 19); do echo "user$i@example.org example.org/user$i/"; done >"$PF/etc/vmailbox"
    cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/lib
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydomain = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_transport = error:no outbound delivery in the benchmark
relay_transport = error:no outbound delivery in the benchmark
virtual_mailbox_domains = example.org
virtual_mailbox_base = $PF/vmail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
virtual_minimum_uid = 100
biff = no
append_dot_mydomain = no
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
smtpd_banner = \$myhostname ESMTP
EOF
    chmod 755 "$PF"
    chown 5000:5000 "$PF/vmail"
    chown postfix:postfix "$PF/lib"
    postfix -c "$PF/etc" check
    postfix -c "$PF/etc" start >/dev/null 2>&1
    wait_port "$POSTFIX_PORT"
    MAILDIRS=$PF/vmail
}

# `one SERVER RUN KIND [--rate R]`: a fresh SERVER, one client run, the server stopped.
one() {
    local server=$1 run=$2 kind=$3
    shift 3
    if [ "$server" = hermod ]; then start_hermod "$run-$kind"; else start_postfix "$run-$kind"; fi
    local port=$HERMOD_PORT
    [ "$server" = hermod ] || port=$POSTFIX_PORT
    record "smtp-$kind-$server" "$LOAD" --target "127.0.0.1:$port" --maildir "$MAILDIRS" \
        --messages "$MESSAGES" "$@" | sed "s/^/$server  /" | tee -a "$DIR/$server-$kind.txt"
    if [ "$server" = hermod ]; then
        stop_pid "$HERMOD_PID"
        HERMOD_PID=
    else
        postfix -c "$PF/etc" stop >/dev/null 2>&1
        PF=
    fi
}

for run in $(seq 1 "$RUNS"); do
    echo "== run $run of $RUNS: closed loop"
    one hermod "$run" closed
    one postfix "$run" closed
    echo "== run $run of $RUNS: open loop, $RATE msg/s offered"
    one hermod "$run" open --rate "$RATE"
    one postfix "$run" open --rate "$RATE"
done

echo "== SMTP medians of $RUNS runs ($MESSAGES messages, 20 connections)"
for s in hermod postfix; do
    c=$DIR/$s-closed.txt o=$DIR/$s-open.txt
    echo "$s: closed loop accepted $(median "$c" 'accepted:.*= \([0-9.]*\) msg/s') msg/s," \
        "delivered $(median "$c" 'delivered:.*= \([0-9.]*\) msg/s') msg/s;" \
        "latency p50 $(median "$c" 'p50 \([0-9.]*\) ms') ms, p99 $(median "$c" 'p99 \([0-9.]*\) ms') ms;" \
        "at $RATE msg/s: p50 $(median "$o" 'p50 \([0-9.]*\) ms') ms," \
        "p99 $(median "$o" 'p99 \([0-9.]*\) ms') ms, delivered $(median "$o" 'delivered:.*= \([0-9.]*\) msg/s') msg/s"
done
