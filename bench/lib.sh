# Sourced by the comparison scripts (mta/examples/compare_postfix.sh, imapd/ and
# pop3d/examples/compare_dovecot.sh, bench/run_all.sh): what they share. Run from the
# workspace root. Benchmarks only: nothing here is for production.

ROOT=$PWD
# PROFILE=debug only to try the scripts out quickly: figures come from release builds.
PROFILE=${PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
RESULTS=${RESULTS:-$ROOT/bench/results}
# HERMOD=/path/to/hermod compares another build (e.g. an older one) with the same clients.
HERMOD=${HERMOD:-$TARGET/hermod}

# Builds hermod and the given example programs (release), unless SKIP_BUILD=1 (run_all.sh
# builds everything once).
build() {
    local release=--release
    [ "$PROFILE" = release ] || release=
    [ -n "${SKIP_BUILD:-}" ] || cargo build $release -p hermod --bin hermod "$@"
}

# The machine a figure was measured on.
machine_info() {
    echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -m | awk '/^Mem:/ {print $2}') MiB RAM"
    echo "kernel:  $(uname -srm)"
    echo "hermod:  $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) ($PROFILE build)"
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
}

# `record NAME CMD...`: runs CMD and keeps its raw output, with the machine and the command,
# in a new file bench/results/<UTC time>-NAME.txt; the output also goes to stdout.
record() {
    local name=$1 file
    shift
    mkdir -p "$RESULTS"
    file=$RESULTS/$(date -u +%Y%m%d-%H%M%S)-$name.txt
    {
        machine_info
        echo "command: $*"
        echo "---"
    } >"$file"
    "$@" 2>&1 | tee -a "$file"
    return "${PIPESTATUS[0]}"
}

# `median FILE PATTERN`: the median of the numbers that sed's PATTERN (one \(group\))
# extracts from the lines of FILE.
median() {
    sed -n "s#.*$2.*#\1#p" "$1" | sort -n |
        awk '{v[NR] = $1} END {if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}

# `wait_port PORT`: until something accepts on 127.0.0.1:PORT (at most 30 s).
wait_port() {
    local i
    for i in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# `hermod_conf BASE_PORT [CERT KEY]`: a hermod.toml for `hermod serve --dev` with every
# listener on loopback, service k (smtp, submission, submissions, imap, imaps, pop3, pop3s,
# lmtp, http) on BASE_PORT+k, no DNS (outbound is not measured), connection limits above
# what the load clients open, and the given certificate (else hermod generates one).
hermod_conf() {
    local p=$1 s
    echo 'myhostname = "h.bench.test"'
    echo '[dns]'
    echo 'nameservers = ["127.0.0.1:9"]'
    echo '[limits]'
    echo 'max_connections_per_ip = 1000'
    if [ -n "${2:-}" ]; then
        echo '[tls]'
        echo "cert = \"$2\""
        echo "key = \"$3\""
    fi
    for s in smtp submission submissions imap imaps pop3 pop3s lmtp http; do
        echo "[$s]"
        echo "listen = [\"127.0.0.1:$p\"]"
        p=$((p + 1))
    done
}

# `make_cert DIR`: DIR/cert.pem and DIR/key.pem, a self-signed ECDSA P-256 certificate
# (what hermod generates for itself), given to both servers so TLS costs them the same.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
    chmod 644 "$1/cert.pem" "$1/key.pem"
}

# `stop_pid PID`: SIGINT, then wait until it has exited (hermod stops cleanly on SIGINT).
stop_pid() {
    kill -INT "$1" 2>/dev/null || return 0
    wait "$1" 2>/dev/null || true
}

# `stop_dovecot DIR`: stops the Dovecot whose base_dir is DIR/run, and waits for its
# processes to go (a fresh Dovecot may reuse the ports at once).
stop_dovecot() {
    local pid i
    [ -f "$1/run/master.pid" ] || return 0
    pid=$(cat "$1/run/master.pid")
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}
