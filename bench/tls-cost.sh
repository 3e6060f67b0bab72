#!/usr/bin/env bash
# The cost of TLS (issue 21, "Benchmarks"): two clients, each producing 1 KiB records with
# acks=1 and then consuming them, over PLAINTEXT and over SASL_SSL (TLS 1.3, AES-GCM,
# SCRAM-SHA-512) against the same node, in alternated pairs so the shared host's speed changes
# hit both alike:
#   - librdkafka's rdkafka_performance (OpenSSL; one thread does a connection's TLS);
#   - chronik-bench (rustls on tokio's threads; --producer-model batch, 64 tasks of 256 KiB
#     batches, so requests are as large as librdkafka's).
# Prints every run (with the CPU seconds the broker and the client spent) and, per client, the
# median ratios SASL_SSL / PLAINTEXT. Goal: TLS keeps >= 70 % of plaintext throughput.
#
# The node: release chronik-server, --cores 2, one PLAINTEXT and one SASL_SSL listener, a
# certificate made here by openssl. rdkafka_performance is built with TLS against the system
# OpenSSL (libssl-dev) from the librdkafka sources inside the rdkafka-sys crate, beside the
# plaintext-only copy bench/rdkafka-perf.sh builds.
#
# usage: bench/tls-cost.sh [pairs] [seconds]   (default 3 pairs of 10 s of producing each)
#        Each consume reads the first TLS_COST_CONSUME_MSGS records (default 1,000,000) of the
#        topic just produced (fewer if the run stored fewer), so both modes read the same amount.
# env:   CARGO_TARGET_DIR (default <repo>/target), TLS_COST_SKIP_BUILD=1 (use the release
#        chronik-server and chronik-bench already built), TLS_COST_CLIENTS (default
#        "rdkafka chronik-bench")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source "$ROOT/bench/lib.sh"
PAIRS=${1:-3}
SECS=${2:-10}
CONSUME_MSGS=${TLS_COST_CONSUME_MSGS:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/chronik-tls-cost.XXXXXX)
trap cleanup EXIT INT TERM

if [[ "${TLS_COST_SKIP_BUILD:-0}" != "1" ]]; then
    echo "== building chronik-server and chronik-bench (release)"
    cargo build --release --bin chronik-server -p chronik
    cargo build --release --bin chronik-bench -p chronik-bench
fi
CLIENTS=${TLS_COST_CLIENTS:-rdkafka chronik-bench}

# librdkafka with TLS and SCRAM (OpenSSL), from the rdkafka-sys crate this workspace locks.
build_rdkafka_perf rdkafka-perf-ssl --enable-ssl --disable-gssapi --disable-curl --disable-zstd \
    --disable-lz4-ext --disable-zlib

echo "== certificate and users"
(
    cd "$WORK"
    key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${key[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=chronik bench CA" 2>/dev/null
    openssl req "${key[@]}" -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    echo "subjectAltName=DNS:localhost,IP:127.0.0.1" >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile san.ext 2>/dev/null
    echo "bench:bench-secret" >users.txt
)

PLAIN_PORT=$(free_port)
SSL_PORT=$(free_port)
"$BIN/chronik-server" --listeners "PLAINTEXT://127.0.0.1:$PLAIN_PORT,SASL_SSL://127.0.0.1:$SSL_PORT" \
    --inter-broker-listener-name PLAINTEXT --ssl-cert-file "$WORK/server.pem" \
    --ssl-key-file "$WORK/server.key" --sasl-bootstrap-users "$WORK/users.txt" \
    --controller-listen "127.0.0.1:$(free_port)" --data-dir "$WORK/data" --cores 2 \
    --metrics-listen none >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_serving "$WORK/server.log" || { tail -20 "$WORK/server.log"; exit 1; }

# What a client of the SASL_SSL listener negotiates with the system OpenSSL's defaults (the ones
# librdkafka uses).
NEGOTIATED=$(openssl s_client -connect "127.0.0.1:$SSL_PORT" -servername localhost -CAfile "$WORK/ca.pem" \
    </dev/null 2>/dev/null | sed -n 's/^New, \(.*\)$/\1/p' | head -1)
echo "   SASL_SSL negotiates: $NEGOTIATED"

# One core's AES-GCM speed (OpenSSL's; the broker's rustls uses ring, whose AES-GCM is also
# AES-NI + PCLMUL assembly), for the ceiling each direction could reach on one core.
for bits in 128 256; do
    AES_MBS=$(openssl speed -evp "aes-$bits-gcm" -bytes 16384 -seconds 2 2>/dev/null \
        | awk -v b="$bits" 'tolower($1) == "aes-" b "-gcm" { v=$NF; sub(/k$/, "", v); printf "%.0f", v * 1000 / 1e6 }')
    echo "   openssl speed aes-$bits-gcm 16 KiB blocks, one core: ${AES_MBS:-?} MB/s"
done

security() { # $1: plain|tls
    [[ $1 == plain ]] && { echo "-b 127.0.0.1:$PLAIN_PORT"; return; }
    echo "-b localhost:$SSL_PORT -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512" \
        "-X sasl.username=bench -X sasl.password=bench-secret -X ssl.ca.location=$WORK/ca.pem"
}

# CPU seconds (user + system) the broker has used so far.
broker_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$SERVER_PID/stat"
}

# run_one MODE N: with $CLIENT, produce for $SECS s to a new topic, then consume its first
# $CONSUME_MSGS records (or to its end). Writes $WORK/CLIENT-MODE-N.{produce,consume} with
# "msgs/s MB/s broker-cpu-s client-cpu-s records".
run_one() {
    if [[ $CLIENT == rdkafka ]]; then run_rdkafka "$@"; else run_chronik_bench "$@"; fi
}

run_rdkafka() {
    local mode=$1 n=$2 topic="t-$1-$2" b0 b1 b2 sec
    read -r -a sec <<<"$(security "$mode")"
    "$BIN/chronik-server" topic create "$topic" --brokers "127.0.0.1:$PLAIN_PORT" -p 1 -r 1 >/dev/null
    b0=$(broker_cpu)
    # rdkafka_performance stops on SIGINT (after the time) and prints its summary.
    /usr/bin/time -f "client-cpu %U %S" -o "$WORK/$CLIENT-$mode-$n.ptime" \
        timeout -s INT "$SECS" "$PERF" -P -t "$topic" -p 0 -s 1024 -a 1 "${sec[@]}" \
        >"$WORK/$CLIENT-$mode-$n.plog" 2>&1 || true
    b1=$(broker_cpu)
    /usr/bin/time -f "client-cpu %U %S" -o "$WORK/$CLIENT-$mode-$n.ctime" \
        timeout 120 "$PERF" -C -t "$topic" -p 0 -o beginning -e -c "$CONSUME_MSGS" "${sec[@]}" \
        >"$WORK/$CLIENT-$mode-$n.clog" 2>&1 || true
    b2=$(broker_cpu)
    summarize "$mode" "$n" "$b0" "$b1" "$b2"
}

# chronik-bench's security flags for MODE (plain|tls).
bench_security() {
    [[ $1 == plain ]] && { echo "--bootstrap-servers 127.0.0.1:$PLAIN_PORT"; return; }
    echo "--bootstrap-servers localhost:$SSL_PORT --security-protocol SASL_SSL --ssl-ca-file $WORK/ca.pem" \
        "--sasl-mechanism SCRAM-SHA-512 --sasl-username bench --sasl-password bench-secret"
}

run_chronik_bench() {
    local mode=$1 n=$2 topic="cb-$1-$2" b0 b1 b2 sec
    read -r -a sec <<<"$(bench_security "$mode")"
    "$BIN/chronik-server" topic create "$topic" --brokers "127.0.0.1:$PLAIN_PORT" -p 1 -r 1 >/dev/null
    b0=$(broker_cpu)
    /usr/bin/time -f "client-cpu %U %S" -o "$WORK/$CLIENT-$mode-$n.ptime" \
        "$BIN/chronik-bench" "${sec[@]}" --topic "$topic" --mode produce --acks 1 --message-size 1024 \
        --producer-model batch -c 64 --batch-size 262144 -d "${SECS}s" >"$WORK/$CLIENT-$mode-$n.plog" 2>&1 || true
    b1=$(broker_cpu)
    /usr/bin/time -f "client-cpu %U %S" -o "$WORK/$CLIENT-$mode-$n.ctime" \
        "$BIN/chronik-bench" "${sec[@]}" --topic "$topic" --mode consume -c 1 -n "$CONSUME_MSGS" \
        >"$WORK/$CLIENT-$mode-$n.clog" 2>&1 || true
    b2=$(broker_cpu)
    summarize "$mode" "$n" "$b0" "$b1" "$b2"
}

# summarize MODE N B0 B1 B2: one line per direction from $CLIENT's logs, and the numbers file.
summarize() {
    python3 - "$WORK" "$CLIENT" "$@" <<'PY'
import re, sys
w, client_name, mode, n, b0, b1, b2 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], *map(float, sys.argv[5:])
base = f"{w}/{client_name}-{mode}-{n}"
def one(kind, log, tfile, broker):
    text = open(f"{base}.{log}").read()
    if client_name != "rdkafka":  # chronik-bench: records acknowledged / consumed, and the rate
        msgs = re.search(r"^  messages +([\d,]+)", text, re.M)
        rate = re.search(r"^  throughput +([\d,]+) msg/s +([\d.]+) MB/s", text, re.M)
        if not (msgs and rate) or "result       PASS" not in text:
            sys.exit(f"{mode} {kind} {n}: no passing summary in {base}.{log}:\n{text[-2000:]}")
        msgs, rate, mbs = msgs.group(1).replace(",", ""), rate.group(1).replace(",", ""), rate.group(2)
    else:
        if kind == "produce":  # the records delivered (acknowledged), not just sent
            pat = r"messages produced \(\d+ bytes\), (\d+) delivered \(offset -?\d+, \d+ failed\) in \d+ms: (\d+) msgs/s and ([\d.]+) MB/s"
        else:
            pat = r"% (\d+) messages \(\d+ bytes\) consumed in \d+ms: (\d+) msgs/s \(([\d.]+) MB/s\)"
        lines = re.findall(pat, text)
        if not lines:
            sys.exit(f"{mode} {kind} {n}: no summary in {base}.{log}:\n{text[-2000:]}")
        msgs, rate, mbs = lines[-1]
    u, s = re.search(r"client-cpu ([\d.]+) ([\d.]+)", open(f"{base}.{tfile}").read()).groups()
    client = float(u) + float(s)
    open(f"{base}.{kind}", "w").write(f"{rate} {mbs} {broker:.2f} {client:.2f} {msgs}\n")
    gb = max(int(msgs) * 1024 / 1e9, 1e-9)
    print(f"{mode:>5} {kind:<7} #{n}: {int(rate):>9,} msg/s {float(mbs):>7.1f} MB/s  {int(msgs):>9,} msgs"
          f"  broker {broker:5.2f} s CPU ({broker / gb:5.2f} s/GB)  client {client:5.2f} s CPU ({client / gb:5.2f} s/GB)")
one("produce", "plog", "ptime", b1 - b0)
one("consume", "clog", "ctime", b2 - b1)
PY
    # A plaintext run stores ~8 GB: the next runs need the disk back.
    "$BIN/chronik-server" topic delete "$topic" --brokers "127.0.0.1:$PLAIN_PORT" >/dev/null || true
}

for CLIENT in $CLIENTS; do
    if [[ $CLIENT == rdkafka ]]; then what="librdkafka $LIBRDKAFKA_VERSION"; else what="chronik-bench"; fi
    echo "== $what: $PAIRS alternated pairs, $SECS s of producing, then $CONSUME_MSGS records consumed"
    alternate_pairs plain tls
    python3 - "$WORK" "$PAIRS" "$CLIENT" <<'PY'
import statistics, sys
w, pairs, client = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(mode, n, kind):
    return [float(x) for x in open(f"{w}/{client}-{mode}-{n}.{kind}").read().split()]
for kind in ("produce", "consume"):
    ratios = [get("tls", n, kind)[0] / get("plain", n, kind)[0] for n in range(1, pairs + 1)]
    cpu = {m: statistics.median(get(m, n, kind)[2] / (get(m, n, kind)[4] * 1024 / 1e9)
                                for n in range(1, pairs + 1)) for m in ("plain", "tls")}
    ccpu = {m: statistics.median(get(m, n, kind)[3] / (get(m, n, kind)[4] * 1024 / 1e9)
                                 for n in range(1, pairs + 1)) for m in ("plain", "tls")}
    print(f"{client} {kind}: throughput SASL_SSL/PLAINTEXT per pair {' '.join(f'{r:.3f}' for r in ratios)};"
          f" median {statistics.median(ratios):.3f}")
    print(f"{client} {kind}: median CPU s per GB, broker plain {cpu['plain']:.2f} / tls {cpu['tls']:.2f},"
          f" client plain {ccpu['plain']:.2f} / tls {ccpu['tls']:.2f}")
PY
done
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
