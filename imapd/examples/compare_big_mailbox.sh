#!/usr/bin/env bash
# Big mailboxes: hermod's IMAP server against Dovecot's on one folder of SIZE messages, for
# each SIZE given (default 1000 10000 100000): SELECT, `UID FETCH 1:* (FLAGS)`, the headers
# of the last 50, SEARCH SUBJECT/FROM/TO/HEADER, SEARCH TEXT/BODY and filling a folder by
# APPEND, measured by imapd/examples/big_mailbox.rs (its top comment says how). Both servers
# get the same Maildir files, written directly (filling 100,000 messages by APPEND would
# take an hour; APPEND is measured apart, on APPEND_COUNT messages). Per size, both servers
# run side by side and the client runs alternate between them RUNS times; the medians of
# the runs are printed as a table. A benchmark only: not part of CI.
#
#   apt-get install -y dovecot-imapd      # once; Dovecot is only the yardstick
#   imapd/examples/compare_big_mailbox.sh [RUNS] [SIZE...]
#
# The filled mailboxes are kept in BIGDIR (default /tmp/hermod-bigmbox) and reused by the
# next call (the first SELECT and SEARCH of a fresh copy build each server's indexes, which
# is slow; the client does those untimed). FRESH=1 starts from new copies; KEEP= (set, empty)
# removes BIGDIR at the end. Each client run's raw output goes to bench/results/. Run as
# root: Dovecot switches to the mail user `nobody`. Without Dovecot (or with
# SKIP_DOVECOT=1), hermod alone is measured.
set -euo pipefail

RUNS=${1:-3}
shift || true
SIZES=${*:-1000 10000 100000}
BASE_PORT=${BASE_PORT:-22800} # hermod's listeners BASE_PORT .. +8; IMAPS is BASE_PORT+4
DOVECOT_PORT=${DOVECOT_PORT:-22993}
BIGDIR=${BIGDIR:-/tmp/hermod-bigmbox}
APPEND_COUNT=${APPEND_COUNT:-500}
REPS=${REPS:-5}
# HERMOD_LABEL names hermod's copy of the data and its column (e.g. `before` with
# HERMOD=/path/to/an/older/hermod); WARM_UNTIL_MS: see big_mailbox's --warm-until-ms.
HERMOD_LABEL=${HERMOD_LABEL:-hermod}
WARM=()
[ -z "${WARM_UNTIL_MS:-}" ] || WARM=(--warm-until-ms "$WARM_UNTIL_MS")

cd "$(dirname "$0")/../.."
. bench/lib.sh
. bench/dovecot_conf.sh
build -p hermod-imapd --example big_mailbox
CLIENT=$TARGET/examples/big_mailbox
HAVE_DOVECOT=
[ -n "${SKIP_DOVECOT:-}" ] || ! command -v dovecot >/dev/null || HAVE_DOVECOT=1
HERMOD_PID=
DOVECOT_DIR=
cleanup() {
    [ -z "$HERMOD_PID" ] || stop_pid "$HERMOD_PID"
    [ -z "$DOVECOT_DIR" ] || stop_dovecot "$DOVECOT_DIR"
    [ -n "${KEEP-1}" ] || rm -rf "$BIGDIR"
}
trap cleanup EXIT
[ -z "${FRESH:-}" ] || rm -rf "$BIGDIR"
mkdir -p "$BIGDIR"
chmod 755 "$BIGDIR"
[ -f "$BIGDIR/cert.pem" ] || make_cert "$BIGDIR"
LOG=$BIGDIR/medians-$HERMOD_LABEL.txt
: >"$LOG"

# `setup SIZE`: the template Maildir and each server's copy of it, made once.
setup() {
    local s=$1 h=$BIGDIR/$1/$HERMOD_LABEL d=$BIGDIR/$1/dovecot
    [ -d "$BIGDIR/$s/template" ] || "$CLIENT" write-maildir "$BIGDIR/$s/template" --messages "$s"
    if [ ! -d "$h" ]; then
        mkdir -p "$h"
        hermod_conf "$BASE_PORT" "$BIGDIR/cert.pem" "$BIGDIR/key.pem" >"$h/hermod.toml"
        H=(--dev --config "$h/hermod.toml" --data-dir "$h/data")
        "$HERMOD" "${H[@]}" domain add example.org >/dev/null
        echo secret | "$HERMOD" "${H[@]}" user add big@example.org --password-stdin >/dev/null
        mkdir -p "$h/data/mail/example.org/big/Maildir"
        cp -a "$BIGDIR/$s/template/." "$h/data/mail/example.org/big/Maildir/"
    fi
    if [ -n "$HAVE_DOVECOT" ] && [ ! -d "$d" ]; then
        mkdir -p "$d"/{run,state,home/big}
        echo "big@example.org:{PLAIN}secret:$(id -u nobody):$(id -g nobody)::$d/home/big" >"$d/passwd"
        cp -a "$BIGDIR/$s/template" "$d/home/big/Maildir"
        chown -R nobody:nogroup "$d/home"
        dovecot_conf "$d" imap "$DOVECOT_PORT" "$BIGDIR/cert.pem" "$BIGDIR/key.pem" >"$d/dovecot.conf"
    fi
}

for size in $SIZES; do
    setup "$size"
    h=$BIGDIR/$size/$HERMOD_LABEL d=$BIGDIR/$size/dovecot
    "$HERMOD" --dev --config "$h/hermod.toml" --data-dir "$h/data" serve >"$h/serve.log" 2>&1 &
    HERMOD_PID=$!
    wait_port $((BASE_PORT + 4))
    if [ -n "$HAVE_DOVECOT" ]; then
        dovecot -c "$d/dovecot.conf"
        DOVECOT_DIR=$d
        wait_port "$DOVECOT_PORT"
    fi
    : >"$BIGDIR/$size/$HERMOD_LABEL.txt"
    : >"$BIGDIR/$size/dovecot.txt"
    warm=("${WARM[@]}")
    for run in $(seq 1 "$RUNS"); do
        echo "== $size messages, run $run of $RUNS"
        record "big-$size-$HERMOD_LABEL" "$CLIENT" measure --port $((BASE_PORT + 4)) \
            --reps "$REPS" --append "$APPEND_COUNT" "${warm[@]}" | sed 's/^/hermod  /' |
            tee -a "$BIGDIR/$size/$HERMOD_LABEL.txt"
        warm=()
        if [ -n "$HAVE_DOVECOT" ]; then
            record "big-$size-dovecot" "$CLIENT" measure --port "$DOVECOT_PORT" --reps "$REPS" \
                --append "$APPEND_COUNT" | sed 's/^/dovecot /' | tee -a "$BIGDIR/$size/dovecot.txt"
        fi
    done
    stop_pid "$HERMOD_PID"
    HERMOD_PID=
    if [ -n "$DOVECOT_DIR" ]; then
        stop_dovecot "$DOVECOT_DIR"
        DOVECOT_DIR=
    fi
done

FIGURES="select fetch_flags fetch_headers_last_50 search_subject search_from search_to
search_header search_text search_body append_fill"
{
    echo "== big-mailbox medians of $RUNS runs (each run: median of $REPS; ms, append_fill msg/s)"
    printf '%-22s' figure
    for size in $SIZES; do printf ' %14s %14s' "$HERMOD_LABEL-$size" "dovecot-$size"; done
    echo
    for f in $FIGURES; do
        printf '%-22s' "$f"
        for size in $SIZES; do
            printf ' %14s %14s' "$(median "$BIGDIR/$size/$HERMOD_LABEL.txt" "figure $f \([0-9.]*\)")" \
                "$(median "$BIGDIR/$size/dovecot.txt" "figure $f \([0-9.]*\)")"
        done
        echo
    done
} | tee "$LOG"
