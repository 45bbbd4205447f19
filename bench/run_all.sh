#!/usr/bin/env bash
# Every comparison behind the README's benchmark figures, in one go: SMTP against Postfix
# (mta/examples/compare_postfix.sh), IMAP and POP3 against Dovecot
# (imapd/examples/compare_dovecot.sh, pop3d/examples/compare_dovecot.sh). Each alternates
# hermod and the yardstick RUNS times, each server started fresh for each run, and prints
# medians. The raw output of every client run is kept in bench/results/ (one file per run:
# date, machine, command, output), the medians in bench/results/<time>-summary.txt.
#
#   bench/run_all.sh [RUNS]            # as root; RUNS defaults to 3
#
# Needs Debian's postfix, dovecot-imapd and dovecot-pop3d, and nothing else listening on
# 127.0.0.1 ports 22525..22533, 22625, 22800..22808, 22993, 22900..22908, 22995. The sizes
# are the scripts' defaults unless set here: SMTP_MESSAGES (10000) and SMTP_RATE (600),
# IMAP_SECS (30), IMAP_CLIENTS (20) and IMAP_MESSAGES (1000), POP3_MESSAGES (10000) and
# POP3_SIZE (5120).
set -euo pipefail

RUNS=${1:-3}
cd "$(dirname "$0")/.."
. bench/lib.sh
[ "$(id -u)" = 0 ] || { echo "run as root (Postfix and Dovecot switch users)" >&2; exit 1; }
build -p hermod-mta -p hermod-imapd -p hermod-pop3d \
    --example smtp_load --example imap_load --example pop3_bench
export SKIP_BUILD=1

mkdir -p "$RESULTS"
SUMMARY=$RESULTS/$(date -u +%Y%m%d-%H%M%S)-summary.txt
{
    machine_info
    echo "command: bench/run_all.sh $RUNS"
    echo "---"
} >"$SUMMARY"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

mta/examples/compare_postfix.sh "$RUNS" "${SMTP_MESSAGES:-10000}" "${SMTP_RATE:-600}" | tee "$LOG"
sed -n '/^== SMTP medians/,$p' "$LOG" >>"$SUMMARY"
imapd/examples/compare_dovecot.sh "$RUNS" "${IMAP_SECS:-30}" "${IMAP_CLIENTS:-20}" \
    "${IMAP_MESSAGES:-1000}" | tee "$LOG"
sed -n '/^== IMAP medians/,$p' "$LOG" >>"$SUMMARY"
pop3d/examples/compare_dovecot.sh "$RUNS" "${POP3_MESSAGES:-10000}" "${POP3_SIZE:-5120}" | tee "$LOG"
sed -n '/^== POP3 medians/,$p' "$LOG" >>"$SUMMARY"

echo
cat "$SUMMARY"
echo "raw output of every run: $RESULTS"
