#!/usr/bin/env bash
# imaptest's stress mode against hermod and against a throw-away Dovecot 2.3, alternating,
# each server started fresh on empty mailboxes for each run: CLIENTS clients over implicit
# TLS, 2 users, SECS seconds, imaptest's default mix (LOGIN, LIST, STATUS, SELECT, FETCH,
# STORE, EXPUNGE, APPEND, LOGOUT ...) on INBOX with messages from imaptest's default.mbox.
# Prints for every run: commands per second, imaptest's mean latency per command (ms) and
# the number of error lines; then the medians. A benchmark only: not part of CI.
#
#   bench/imaptest_stress.sh [RUNS] [SECS] [CLIENTS]      # as root (Dovecot switches users)
#
# Needs imaptest (IMAPTEST=path, default /work/imaptest-src/src/imaptest; Debian has no
# package: build it from its source against dovecot-dev) and Debian's dovecot-imapd.
# hermod: release build, users made by `hermod user add` (argon2id); Dovecot: {PLAIN}
# passwords in a passwd-file (bench/dovecot_conf.sh). Ports: hermod BASE_PORT..+8 (IMAPS at
# +4), Dovecot DOVECOT_PORT.
set -euo pipefail

RUNS=${1:-3}
SECS=${2:-20}
CLIENTS=${3:-10}
BASE_PORT=${BASE_PORT:-41400}
DOVECOT_PORT=${DOVECOT_PORT:-41493}
IMAPTEST=${IMAPTEST:-/work/imaptest-src/src/imaptest}
MBOX=${MBOX:-$(dirname "$IMAPTEST")/tests/default.mbox}

cd "$(dirname "$0")/.."
. bench/lib.sh
. bench/dovecot_conf.sh
build
DIR=$(mktemp -d /tmp/imaptest-stress.XXXXXX)
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
printf 'stress1@example.org:secret\nstress2@example.org:secret\n' >"$DIR/users"

# `stress NAME PORT`: one imaptest run; prints one summary line.
stress() {
    local out=$DIR/$1.out rows=$DIR/$1.rows
    # imaptest wants a user template even when the userfile names the users.
    "$IMAPTEST" host=127.0.0.1 port="$2" ssl=any-cert user=stress1@example.org \
        userfile="$DIR/users" mbox="$MBOX" \
        clients="$CLIENTS" secs="$SECS" box=INBOX output="$rows" >"$out" 2>&1 || true
    cat "$out" >>"$DIR/$1.all"
    python3 - "$rows" "$out" "$SECS" "$1" <<'EOF'
import sys
rows, out, secs, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# output=FILE: a header of state names, then one line a second with three numbers per
# state: commands started, commands timed, milliseconds spent on them.
lines = open(rows).read().split("\n")
names = [h.rsplit(" ", 1)[0] for h in lines[0].split("\t")[::2]]
# The header is written before imaptest turns COPY off (no copy destination given).
width = max((len(l.split("\t")) for l in lines[1:]), default=0) // 3
if len(names) > width and "COPY" in names:
    names.remove("COPY")
n = len(names)
sums = [[0, 0, 0] for _ in range(n)]
for line in lines[1:]:
    v = line.split("\t")
    if len(v) < 3 * n:
        continue
    for i in range(n):
        for j in range(3):
            sums[i][j] += int(v[3 * i + j])
total = sum(s[0] for s in sums)
errors = sum(1 for l in open(out, errors="replace") if "Error:" in l)
lat = " ".join(f"{names[i]}={sums[i][2] / sums[i][1]:.1f}" if sums[i][1] else f"{names[i]}=-"
               for i in range(n))
print(f"{name}: {total / secs:.0f} commands/s, errors {errors}, mean ms: {lat}")
EOF
}

run_hermod() {
    local h=$DIR/hermod-$1
    mkdir -p "$h"
    hermod_conf "$BASE_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$h/hermod.toml"
    H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
    "$HERMOD" "${H[@]}" domain add example.org >/dev/null
    for u in stress1 stress2; do
        echo secret | "$HERMOD" "${H[@]}" user add "$u@example.org" --password-stdin >/dev/null
    done
    "$HERMOD" "${H[@]}" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port $((BASE_PORT + 4))
    record imaptest-hermod stress hermod $((BASE_PORT + 4)) | tee -a "$DIR/hermod.txt"
    stop_pid "$HERMOD_PID"
    HERMOD_PID=
    [ -n "${KEEP:-}" ] || rm -rf "$h"
}

run_dovecot() {
    local d=$DIR/dovecot-$1 u
    mkdir -p "$d"/{run,state,home}
    for u in stress1 stress2; do
        echo "$u@example.org:{PLAIN}secret:$(id -u nobody):$(id -g nobody)::$d/home/$u"
        mkdir -p "$d/home/$u/Maildir"
    done >"$d/passwd"
    chown -R nobody:nogroup "$d/home"
    dovecot_conf "$d" imap "$DOVECOT_PORT" "$DIR/cert.pem" "$DIR/key.pem" >"$d/dovecot.conf"
    dovecot -c "$d/dovecot.conf"
    DOVECOT_DIR=$d
    wait_port "$DOVECOT_PORT"
    record imaptest-dovecot stress dovecot "$DOVECOT_PORT" | tee -a "$DIR/dovecot.txt"
    stop_dovecot "$d"
    DOVECOT_DIR=
    [ -n "${KEEP:-}" ] || rm -rf "$d"
}

for i in $(seq 1 "$RUNS"); do
    run_hermod "$i"
    run_dovecot "$i"
done

echo "== imaptest stress medians ($RUNS runs, $CLIENTS clients, 2 users, ${SECS}s, TLS)"
for s in hermod dovecot; do
    line="$s:"
    line+=" $(median "$DIR/$s.txt" ': \([0-9.]*\) commands/s') commands/s,"
    line+=" errors $(median "$DIR/$s.txt" 'errors \([0-9]*\)'), mean ms:"
    for c in LOGIN SELECT FETCH STORE EXPUNGE APPEND; do
        line+=" $c=$(median "$DIR/$s.txt" " $c=\([0-9.]*\)")"
    done
    echo "$line"
done
