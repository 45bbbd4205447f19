#!/usr/bin/env bash
# Compare hermod's SMTP intake with Postfix's on this machine: the same client
# (smtp_load --target), 20 recipients user0..user19@example.org delivered into Maildirs,
# alternating hermod and Postfix runs. A benchmark only: not part of CI.
#
#   apt-get install -y postfix            # once; Postfix is only the yardstick
#   mta/examples/compare_postfix.sh [RUNS] [MESSAGES] [RATE]
#
# Each run is a closed loop (every connection sends its next message once the last got its
# 250: the most each server takes), then, with RATE (default 600), a run at that fixed
# offered rate, so the end-of-DATA latencies are compared at the same load. hermod runs as
# `hermod serve` (release build, its own process), Postfix as its own master with
# `virtual` delivery, both with their configs and data in a temporary directory on
# loopback ports. Run as root (Postfix's daemons switch users). Both are stopped at the end.
set -euo pipefail

RUNS=${1:-3}
MESSAGES=${2:-10000}
RATE=${3:-600}
HERMOD_PORT=${HERMOD_PORT:-22525}
POSTFIX_PORT=${POSTFIX_PORT:-22625}
BASE_PORT=${BASE_PORT:-22700} # hermod's other listeners: BASE_PORT .. BASE_PORT+7

cd "$(dirname "$0")/../.."
cargo build --release -p hermod -p hermod-mta --example smtp_load
HERMOD=$PWD/target/release/hermod
LOAD=$PWD/target/release/examples/smtp_load
DIR=$(mktemp -d /tmp/smtp-compare.XXXXXX)
HERMOD_PID=
cleanup() {
    [ -n "$HERMOD_PID" ] && kill -INT "$HERMOD_PID" 2>/dev/null && wait "$HERMOD_PID" || true
    postfix -c "$DIR/postfix/etc" stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT

# --- hermod ---
mkdir -p "$DIR/hermod"
{
    echo 'myhostname = "h.bench.test"'
    echo '[dns]'
    echo 'nameservers = ["127.0.0.1:9"]'
    echo '[smtp]'
    echo "listen = [\"127.0.0.1:$HERMOD_PORT\"]"
    p=$BASE_PORT
    for s in submission submissions imap imaps pop3 pop3s lmtp http; do
        echo "[$s]"
        echo "listen = [\"127.0.0.1:$p\"]"
        p=$((p + 1))
    done
} >"$DIR/hermod/hermod.toml"
H=(--dev --config "$DIR/hermod/hermod.toml" --data-dir "$DIR/hermod/data")
"$HERMOD" "${H[@]}" domain add example.org >/dev/null
for i in $(seq 0 19); do
    echo "password $i" | "$HERMOD" "${H[@]}" user add "user$i@example.org" --password-stdin >/dev/null
done
"$HERMOD" "${H[@]}" serve >"$DIR/hermod/serve.log" 2>&1 &
HERMOD_PID=$!

# --- Postfix ---
P=$DIR/postfix
mkdir -p "$P"/{etc,spool,lib,vmail}
cp /etc/postfix/master.cf "$P/etc/master.cf"
# Only our loopback smtpd, not the system's port 25.
sed -i "s/^smtp\s\+inet/127.0.0.1:$POSTFIX_PORT inet/" "$P/etc/master.cf"
for i in $(seq 0 19); do echo "user$i@example.org example.org/user$i/"; done >"$P/etc/vmailbox"
cat >"$P/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $P/spool
data_directory = $P/lib
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
virtual_mailbox_base = $P/vmail
virtual_mailbox_maps = texthash:$P/etc/vmailbox
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
virtual_minimum_uid = 100
biff = no
append_dot_mydomain = no
maillog_file = $P/maillog
maillog_file_prefixes = $P
smtpd_banner = \$myhostname ESMTP
EOF
chmod 755 "$DIR" "$P"
chown 5000:5000 "$P/vmail"
chown postfix:postfix "$P/lib"
postfix -c "$P/etc" check
postfix -c "$P/etc" start

for port in "$HERMOD_PORT" "$POSTFIX_PORT"; do
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

hermod_run() {
    find "$DIR/hermod/data/mail" -type f -path '*/new/*' -delete 2>/dev/null || true
    "$LOAD" --target "127.0.0.1:$HERMOD_PORT" --maildir "$DIR/hermod/data/mail" \
        --messages "$MESSAGES" "$@" | tail -3 | sed 's/^/hermod  /'
}
postfix_run() {
    rm -rf "${P:?}"/vmail/*
    "$LOAD" --target "127.0.0.1:$POSTFIX_PORT" --maildir "$P/vmail" \
        --messages "$MESSAGES" "$@" | tail -3 | sed 's/^/postfix /'
}
for run in $(seq 1 "$RUNS"); do
    echo "== run $run: closed loop"
    hermod_run
    postfix_run
    echo "== run $run: $RATE msg/s offered"
    hermod_run --rate "$RATE"
    postfix_run --rate "$RATE"
done
