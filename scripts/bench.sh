#!/usr/bin/env bash
# The benchmark: how fast kafka2mysql moves records, against the two
# limits of this machine that bound it.
#
#   scripts/bench.sh [--quick] [--runs N] [--records N] [--partitions N] [--only drain|latency|read] [--buffered-bytes N] [--latency-seconds S] [--keep]
#
# On one fixed data set (1,000,000 JSON records of about 200 bytes, keys
# spread over 8 partitions, or --partitions N; --quick: 200,000) it measures
#   write limit   LOAD DATA LOCAL INFILE of the same rows into an empty copy of
#                 the table, from one client (mariadb --local-infile over TCP);
#   read limit    kcat -C -e reading the whole topic (fetch.wait.max.ms=10, so
#                 that it does not idle at the end: 500 ms by default);
#   kafka2mysql   the release binary draining the topic into the empty table
#                 (upsert), timed from its start to lag 0 (`status --json`);
#                 records/s, CPU seconds per million records, peak RSS;
#   read path     the same pipeline with a sink that writes nothing
#                 (examples/read_path.rs);
#   debezium      the drain again, of the same rows as Debezium change events
#                 (record_format = "debezium", without schemas, keyed
#                 {"id":N}) from a topic of their own;
#   latency       records produced at a steady 1,000/s for 60 s (--quick:
#                 20 s), each carrying its produce time in ms; p50/p99 of the
#                 row's insert time (DEFAULT CURRENT_TIMESTAMP(6)) minus it.
# `--only drain` measures the JSON drain alone (and reports it alone, with
# the database connections the service held at most), then the database's
# own rate for the same rows loaded in id order and in the topic's
# partition order (partition after partition, each in offset order: how a
# drain that reads a few partitions at a time writes them); its last line
# is `partition_order_vs_id_order=R`: the cheap way to compare partition
# counts. `--only read` measures kcat and the read path alone, in turns;
# its last line is `read_vs_kcat=R2`. `--only latency` measures the latency alone
# (with --partitions: how long a record waits when many partitions are
# read in turn, kafka.fetch_window). `--buffered-bytes N` sets
# worker.max_buffered_bytes (default: the service's own). Each throughput
# measurement runs --runs times (default 3) and reports the median. The
# report (a Markdown table) goes to stdout and to
# target/bench/report-<id>.md (and target/bench/latest.md), with what each
# process spent in CPU per million records, so that where the time goes is
# measured too; its last two lines are
#   debezium_vs_json=R3
#   e2e_vs_write_limit=R1 read_vs_kcat=R2
# R1 = kafka2mysql drain rate / write limit rate, R2 = read path rate / kcat
# rate, R3 = debezium drain rate / JSON drain rate. Progress goes to stderr.
#
# Everything it creates is named bench_<id>_* (topics, tables, groups) and is
# dropped at the end, also after a failure or Ctrl-C, unless --keep is given.
# The data files are generated once, deterministically (examples/bench_records.rs),
# and cached in target/bench/data. Needs cargo, plus what scripts/services.sh
# installs (kcat, the mariadb client); it runs `scripts/services.sh up` itself.
#
# The services are shared with other work on this machine: the numbers are
# only as quiet as the machine is. Before each write it waits until InnoDB has
# flushed the previous run's pages, so that runs start alike. A drain during
# which a service was away (the service logged a warning) is repeated once
# and flagged in the report.
set -euo pipefail

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
SERVICES="$REPO/scripts/services.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BENCH_DIR="$TARGET_DIR/bench"
BIN="$TARGET_DIR/release/kafka2mysql"
READ_PATH_BIN="$TARGET_DIR/release/examples/read_path"
RECORDS_BIN="$TARGET_DIR/release/examples/bench_records"

RECORDS=1000000
RUNS=3
LATENCY_SECONDS=60
LATENCY_RATE=1000
PARTITIONS=8
ONLY=all
BUFFERED_BYTES=""
KEEP=0
QUICK=0
# Generator version: bump when the data set changes, so cached files are not reused.
DATA_VERSION=2
# Deadlines, generous for a busy 2-core machine.
DRAIN_DEADLINE_SECONDS=900
SERVICES_WAIT_SECONDS=300

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# One run at a time on these ports: the script starts again under the lock
# that `scripts/services.sh ports-lock` names ("locked").
[[ -n ${K2M_PORTS_LOCKED:-} ]] || exec "$SERVICES" locked "$REPO/scripts/bench.sh" "$@"

usage() {
    sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}/usage: /' >&2
    exit 2
}

while (($# > 0)); do
    case $1 in
        --quick) QUICK=1 RECORDS=200000 LATENCY_SECONDS=20 ;;
        --keep) KEEP=1 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        --records) RECORDS=${2:?--records needs a number}; shift ;;
        --partitions) PARTITIONS=${2:?--partitions needs a number}; shift ;;
        --only) ONLY=${2:?--only needs a measurement}; shift ;;
        --buffered-bytes) BUFFERED_BYTES=${2:?--buffered-bytes needs a number}; shift ;;
        --latency-seconds) LATENCY_SECONDS=${2:?--latency-seconds needs a number}; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) usage ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $RECORDS =~ ^[1-9][0-9]*$ && $LATENCY_SECONDS =~ ^[1-9][0-9]*$ && $PARTITIONS =~ ^[1-9][0-9]*$ ]] \
    || die "--runs, --records, --partitions and --latency-seconds take positive whole numbers"
[[ $ONLY == all || $ONLY == drain || $ONLY == latency || $ONLY == read ]] || die "--only takes drain, latency or read"
[[ -z $BUFFERED_BYTES || $BUFFERED_BYTES =~ ^[1-9][0-9]*$ ]] || die "--buffered-bytes takes a positive whole number"

for tool in cargo awk; do
    command -v "$tool" >/dev/null 2>&1 || {
        [[ $tool == cargo && -x "$HOME/.cargo/bin/cargo" ]] && { PATH="$HOME/.cargo/bin:$PATH"; continue; }
        die "$tool is not installed"
    }
done

ID="$(date +%m%d%H%M%S)_$$"
PREFIX="bench_$ID"
TOPIC="$PREFIX"
DBZ_TOPIC="${PREFIX}_dbz"
LATENCY_TOPIC="${PREFIX}_lat"
TABLE="$PREFIX"
LOAD_TABLE="${PREFIX}_load"
LATENCY_TABLE="${PREFIX}_lat"
DEAD_LETTER_TABLE="${PREFIX}_dl"
WORK="$BENCH_DIR/run-$ID"
DATA_DIR="$BENCH_DIR/data"
REPORT="$BENCH_DIR/report-$ID.md"
mkdir -p "$WORK" "$DATA_DIR"
COLUMNS_LIST="id,customer,region,status,amount,currency,items,produced_ms,note"

# ---------------------------------------------------------------- clean-up

TOPICS_CREATED=()
SERVICE_PIDS=()
cleanup() {
    local rc=$? pid topic
    trap - EXIT
    for pid in "${SERVICE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then
        say "--keep: leaving topics ${TOPICS_CREATED[*]:-none} and tables $PREFIX* in place; work files in $WORK"
    else
        for topic in "${TOPICS_CREATED[@]}"; do
            services_retry topic-delete "$topic" || say "could not delete topic $topic"
        done
        if [[ -n ${MYSQL_PASSWORD:-} ]]; then
            mysql_k2m -e "DROP TABLE IF EXISTS \`$TABLE\`, \`$LOAD_TABLE\`, \`$LATENCY_TABLE\`, \`$DEAD_LETTER_TABLE\`" \
                2>/dev/null || say "could not drop the tables $PREFIX*"
        fi
        if ((rc == 0)); then
            rm -rf "$WORK"
        else
            say "logs and configs of this run are kept in $WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

mysql_k2m() {
    MYSQL_PWD="$MYSQL_PASSWORD" mariadb --no-defaults --protocol=TCP --host="$MYSQL_HOST" --port="$MYSQL_PORT" \
        --user="$MYSQL_USER" --database="$MYSQL_DATABASE" --default-character-set=utf8mb4 "$@"
}

now() { printf '%s' "$EPOCHREALTIME"; }

# Prints the median of the numbers given ("n/a" when there are none).
median() {
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# Prints "min-max" of the numbers given, formatted with the printf format $1.
range() { local f=$1; shift; printf '%s\n' "$@" | sort -g | awk -v f="$f" 'NR == 1 { lo = $1 } { hi = $1 } END { printf f "-" f, lo, hi }'; }
calc() { awk "BEGIN { printf $1 }"; }
# A whole number with thousands separators.
num() { printf "%'.0f" "$1"; }

# CPU seconds (user + system) a live process has used.
cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# The broker's and the database server's pids, to show what the servers spend
# per record (read from the services' pid files; empty when unknown).
server_pid() { local f=$1; [[ -r $f ]] && read -r pid <"$f" && [[ -d /proc/$pid ]] && echo "$pid" || true; }
# The broker of whichever Kafka version runs (.services/kafka-VERSION/kafka.pid).
broker_cpu() {
    local f p=""
    for f in "${K2M_SERVICES_DIR:-$REPO/.services}"/kafka-*/kafka.pid; do
        p=$(server_pid "$f")
        [[ -n $p ]] && break
    done
    [[ -n $p ]] && echo "$p:$(cpu_seconds "$p")" || echo none
}
mysqld_cpu() { local p; p=$(server_pid "${K2M_SERVICES_DIR:-$REPO/.services}/mariadb/mysqld.pid"); [[ -n $p ]] && echo "$p:$(cpu_seconds "$p")" || echo none; }
# CPU seconds per million records between two broker_cpu/mysqld_cpu samples;
# "n/a" when the server was restarted in between.
server_per_million() {
    local before=$1 after=$2
    if [[ $before == none || $after == none || ${before%%:*} != "${after%%:*}" ]]; then
        echo n/a
    else
        calc "\"%.2f\", (${after#*:} - ${before#*:}) * 1000000 / $RECORDS"
    fi
}

# Other work on this machine stops and starts the services; wait until both answer.
wait_for_services() {
    local deadline=$((SECONDS + SERVICES_WAIT_SECONDS))
    until "$SERVICES" status >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "the services are down for more than ${SERVICES_WAIT_SECONDS}s (scripts/services.sh status)"
        sleep 1
    done
}

# Waits (up to a minute) until InnoDB has written out the dirty pages of what
# ran before, so that each write measurement starts from a quiet database.
settle_database() {
    local deadline=$((SECONDS + 60)) dirty age
    while ((SECONDS < deadline)); do
        read -r dirty age < <(mysql_k2m -N -e "SELECT
            SUM(IF(VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY', VARIABLE_VALUE, 0)),
            SUM(IF(VARIABLE_NAME = 'INNODB_CHECKPOINT_AGE', VARIABLE_VALUE, 0))
            FROM information_schema.GLOBAL_STATUS" 2>/dev/null) || return 0
        [[ $dirty =~ ^[0-9]+$ && $age =~ ^[0-9]+$ ]] || return 0
        ((dirty < 200 && age < 1048576)) && return 0
        sleep 0.5
    done
}

# The table every measurement writes into. produced_ms is the produce time the
# latency records carry (0 in the bulk data set); inserted_at is the row's
# insert time.
create_table() {
    mysql_k2m -e "DROP TABLE IF EXISTS \`$1\`;
        CREATE TABLE \`$1\` (
            id BIGINT NOT NULL PRIMARY KEY,
            customer VARCHAR(32) NOT NULL,
            region VARCHAR(16) NOT NULL,
            status VARCHAR(16) NOT NULL,
            amount DECIMAL(12,2) NOT NULL,
            currency CHAR(3) NOT NULL,
            items INT NOT NULL,
            produced_ms BIGINT NOT NULL,
            note VARCHAR(255) NOT NULL,
            inserted_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB"
}

row_count() { mysql_k2m -N -e "SELECT COUNT(*) FROM \`$1\`"; }

# Writes a service config: write_config FILE TOPIC GROUP TABLE [RECORD_FORMAT].
# Everything not written here is the documented default (README.md, "Configuration reference")
# except commit.interval_ms (see the report's notes).
write_config() {
    local file=$1 topic=$2 group=$3 table=$4 format=${5:-json}
    mkdir -p "$(dirname "$file")"
    cat >"$file" <<EOF
# Written by scripts/bench.sh.
[kafka]
brokers = ["$KAFKA_BROKERS"]
topic = "$topic"
group = "$group"
offset_reset = "earliest"

[mysql]
url = "$MYSQL_URL"
table = "$table"
key_columns = ["id"]
write_mode = "upsert"
record_format = "$format"
dead_letter_table = "$DEAD_LETTER_TABLE"

[commit]
# Lag 0 is read from the committed offsets: commit at most 100 ms after the
# last record, so that the end of a drain is seen soon (default 5 s).
interval_ms = 100

[log]
file = ""
level = "info"
stats_interval_ms = 10000
EOF
    [[ -z $BUFFERED_BYTES ]] || printf '\n[worker]\nmax_buffered_bytes = %s\n' "$BUFFERED_BYTES" >>"$file"
}

# Waits until `status --json` shows every partition committed at the log end;
# prints nothing; returns 1 after the deadline or when the process died.
# Sets PEAK_CONNECTIONS: the most database sessions of the service's user at
# one of its looks, from the server's process list, read as root (the mysql
# crate goes over the Unix socket when the server is local, as another
# account of the same user name, which neither the process's TCP sockets
# nor the user's own view of the list show); nothing else uses this user
# name while a drain runs (`status` runs between the looks).
wait_for_lag_zero() {
    local config=$1 pid=$2 deadline=$(($SECONDS + $3)) out zero held
    PEAK_CONNECTIONS=0
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        held=$("$SERVICES" mysql -N -B -e "SELECT COUNT(*) FROM information_schema.PROCESSLIST
            WHERE USER = '$MYSQL_USER'" 2>/dev/null || true)
        [[ $held =~ ^[0-9]+$ ]] && ((held > PEAK_CONNECTIONS)) && PEAK_CONNECTIONS=$held
        if out=$("$BIN" status --config "$config" --json 2>/dev/null); then
            zero=$(grep -c '"lag": 0,' <<<"$out" || true)
            ((zero == PARTITIONS)) && return 0
        fi
        # A status call costs about 10 ms of CPU; ten a second is a small
        # share of two CPUs and sees the end within ~0.1 s.
        sleep 0.1
    done
    return 1
}

# Runs a scripts/services.sh command, retrying while the broker is away or
# just restarted (other tests stop it): up to 2 minutes.
services_retry() {
    local deadline=$((SECONDS + 120))
    until "$SERVICES" "$@" >"$WORK/services.out" 2>&1; do
        if ((SECONDS >= deadline)); then
            cat "$WORK/services.out" >&2
            return 1
        fi
        sleep 2
        wait_for_services
    done
}

disturbed() { grep -E -q '\[(WARN|ERROR)\]' "$1"; }

# ---------------------------------------------------------------- set-up

say "starting the services (scripts/services.sh up)"
"$SERVICES" up >/dev/null || die "the services did not start; see the message above"
eval "$("$SERVICES" env)"
export KAFKA_BROKERS MYSQL_URL MYSQL_PASSWORD
MYSQL_HOST=${MYSQL_URL#mysql://*@}; MYSQL_HOST=${MYSQL_HOST%%:*}
MYSQL_PORT=${MYSQL_URL##*:}; MYSQL_PORT=${MYSQL_PORT%%/*}
MYSQL_USER=${MYSQL_URL#mysql://}; MYSQL_USER=${MYSQL_USER%%@*}
MYSQL_DATABASE=${MYSQL_URL##*/}
for tool in kcat mariadb; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (scripts/services.sh install)"
done

say "building (cargo build --release, with examples/read_path and examples/bench_records)"
(cd "$REPO" && cargo build --release --quiet --bin kafka2mysql --example read_path --example bench_records) \
    || die "cargo build --release failed"
[[ -x $BIN && -x $READ_PATH_BIN && -x $RECORDS_BIN ]] || die "the build did not produce $BIN and the examples"
# The code the runs measure, for the reports.
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || GIT_REV="$GIT_REV+changes"

# load_runs FILE NAME: LOAD DATA LOCAL INFILE of FILE's rows into an empty
# copy of the table, --runs times; sets load_rates and load_mysqld.
load_runs() {
    local file=$1 name=$2 run m0 m1 started seconds rows
    load_rates=() load_mysqld=()
    for run in $(seq "$RUNS"); do
        wait_for_services
        create_table "$LOAD_TABLE"
        settle_database
        m0=$(mysqld_cpu)
        started=$(now)
        mysql_k2m --local-infile=1 -e "LOAD DATA LOCAL INFILE '$file' INTO TABLE \`$LOAD_TABLE\`
            FIELDS TERMINATED BY '\t' LINES TERMINATED BY '\n' ($COLUMNS_LIST)"
        seconds=$(calc "\"%.3f\", $(now) - $started")
        m1=$(mysqld_cpu)
        rows=$(row_count "$LOAD_TABLE")
        ((rows == RECORDS)) || die "LOAD DATA loaded $rows rows, expected $RECORDS"
        load_rates+=("$(calc "\"%.0f\", $RECORDS / $seconds")")
        load_mysqld+=("$(server_per_million "$m0" "$m1")")
        say "$name run $run: ${seconds}s, ${load_rates[-1]} rows/s"
    done
    mysql_k2m -e "DROP TABLE IF EXISTS \`$LOAD_TABLE\`"
}

# ---------------------------------------------------------------- data set

# One deterministic generator writes both files: key<TAB>JSON for kcat and
# the same rows tab-separated for LOAD DATA.
DATA_KV="$DATA_DIR/records-v$DATA_VERSION-$RECORDS.kv"
DATA_TSV="$DATA_DIR/records-v$DATA_VERSION-$RECORDS.tsv"
if [[ ! -s $DATA_KV || ! -s $DATA_TSV ]]; then
    say "generating $RECORDS records into $DATA_DIR"
    "$RECORDS_BIN" data "$RECORDS" "$DATA_KV.tmp" "$DATA_TSV.tmp" || die "generating the data set failed"
    mv "$DATA_KV.tmp" "$DATA_KV"
    mv "$DATA_TSV.tmp" "$DATA_TSV"
fi
VALUE_BYTES=$(awk -F'\t' '{ s += length($2) } END { printf "%.0f", s / NR }' "$DATA_KV")
DATA_DBZ="$DATA_DIR/records-dbz-v$DATA_VERSION-$RECORDS.kv"
if [[ $ONLY == all && ! -s $DATA_DBZ ]]; then
    say "generating $RECORDS Debezium events into $DATA_DIR"
    "$RECORDS_BIN" debezium "$RECORDS" "$DATA_DBZ.tmp" || die "generating the Debezium data set failed"
    mv "$DATA_DBZ.tmp" "$DATA_DBZ"
fi
[[ $ONLY == all ]] && DBZ_VALUE_BYTES=$(awk -F'\t' '{ s += length($2) } END { printf "%.0f", s / NR }' "$DATA_DBZ")

# produce_topic TOPIC FILE: creates the topic and produces FILE's key<TAB>value
# lines into it; sets PRODUCE_SECONDS.
produce_topic() {
    local topic=$1 file=$2 started produced
    wait_for_services
    say "creating topic $topic ($PARTITIONS partitions) and producing $RECORDS records with kcat"
    TOPICS_CREATED+=("$topic")
    services_retry topic-create "$topic" "$PARTITIONS" || die "could not create topic $topic"
    # Keyed records: librdkafka's default partitioner hashes the key.
    started=$(now)
    kcat -P -b "$KAFKA_BROKERS" -t "$topic" -K $'\t' -X linger.ms=50 -X batch.num.messages=10000 \
        -X compression.codec=none -l "$file" || die "kcat could not produce $file"
    PRODUCE_SECONDS=$(calc "\"%.2f\", $(now) - $started")
    services_retry log-end-offsets "$topic" || die "cannot read the log end offsets of $topic"
    produced=$(awk '/^[0-9]+ [0-9]+$/ { s += $2; n++ } END { print s + 0, n + 0 }' "$WORK/services.out")
    [[ $produced == "$RECORDS $PARTITIONS" ]] || die "topic $topic holds $produced (records partitions), expected $RECORDS $PARTITIONS"
    say "produced in ${PRODUCE_SECONDS}s"
}
[[ $ONLY == all ]] && produce_topic "$DBZ_TOPIC" "$DATA_DBZ"
[[ $ONLY == latency ]] || produce_topic "$TOPIC" "$DATA_KV"

# ---------------------------------------------------------------- write limit

[[ $ONLY == all ]] && load_runs "$DATA_TSV" "write limit"

# ---------------------------------------------------------------- read limit and read path

# kcat_run: one read of the whole topic by kcat; adds to kcat_rates, kcat_cpu
# and kcat_broker.
kcat_run() {
    local b0 b1 timing seconds user system
    wait_for_services
    b0=$(broker_cpu)
    TIMEFORMAT='%R %U %S'
    # fetch.wait.max.ms=10: with its default (500 ms) kcat idles half a second
    # at the end of the topic before -e sees it, which is not reading speed.
    timing=$({ time kcat -C -b "$KAFKA_BROKERS" -t "$TOPIC" -o beginning -e -q -X fetch.wait.max.ms=10 \
        >/dev/null 2>"$WORK/kcat.err"; } 2>&1) \
        || die "kcat -C failed: $(cat "$WORK/kcat.err")"
    b1=$(broker_cpu)
    read -r seconds user system <<<"$timing"
    kcat_rates+=("$(calc "\"%.0f\", $RECORDS / $seconds")")
    kcat_cpu+=("$(calc "\"%.2f\", ($user + $system) * 1000000 / $RECORDS")")
    kcat_broker+=("$(server_per_million "$b0" "$b1")")
    say "read limit run ${#kcat_rates[@]}: ${seconds}s, ${kcat_rates[-1]} records/s"
}

# read_run: one run of the read path (the pipeline, a sink that writes
# nothing) over the whole topic; adds to read_rates, read_cpu, read_rss and
# read_broker.
read_run() {
    local run=$((${#read_rates[@]} + 1)) config log b0 b1 line seconds cpu rss
    wait_for_services
    config="$WORK/conf/read-$run.toml"
    log="$WORK/read-$run.log"
    write_config "$config" "$TOPIC" "${PREFIX}_read_$run" "$TABLE"
    b0=$(broker_cpu)
    line=$("$READ_PATH_BIN" --config "$config" --expect "$RECORDS" 2>"$log") || die "read_path failed; see $log"
    b1=$(broker_cpu)
    seconds=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    cpu=$(sed -n 's/.* cpu_s=\([0-9.]*\).*/\1/p' <<<"$line")
    rss=$(sed -n 's/.* peak_rss_kib=\([0-9]*\).*/\1/p' <<<"$line")
    read_rates+=("$(calc "\"%.0f\", $RECORDS / $seconds")")
    read_cpu+=("$(calc "\"%.2f\", $cpu * 1000000 / $RECORDS")")
    read_rss+=("$(calc "\"%.1f\", $rss / 1024")")
    read_broker+=("$(server_per_million "$b0" "$b1")")
    say "read path run $run: ${seconds}s, ${read_rates[-1]} records/s"
}

kcat_rates=() kcat_cpu=() kcat_broker=()
read_rates=() read_cpu=() read_rss=() read_broker=()
if [[ $ONLY == all || $ONLY == read ]]; then
    create_table "$TABLE" # the read path reads the table's schema; it writes nothing
    # In turns, so that a busy moment of this shared machine slows both alike.
    for run in $(seq "$RUNS"); do
        kcat_run
        read_run
    done
fi

if [[ $ONLY == read ]]; then
    KCAT=$(median "${kcat_rates[@]}")
    READ=$(median "${read_rates[@]}")
    {
        echo "## kafka2mysql read path ($(date -u '+%Y-%m-%d %H:%M UTC'), $ID, --only read)"
        echo
        echo "$(num "$RECORDS") JSON records of ${VALUE_BYTES} bytes, $PARTITIONS partitions; kafka2mysql $GIT_REV; median of $RUNS run(s), in turns."
        echo
        echo "| measurement | records/s | CPU s / 1M records | peak RSS MiB | broker CPU s / 1M |"
        echo "| --- | ---: | ---: | ---: | ---: |"
        echo "| read limit: kcat -C -e (fetch.wait.max.ms=10) | $(num "$KCAT") [$(range %.0f "${kcat_rates[@]}")] | $(median "${kcat_cpu[@]}") | | $(median "${kcat_broker[@]}") |"
        echo "| kafka2mysql read path, no database (examples/read_path) | $(num "$READ") [$(range %.0f "${read_rates[@]}")] | $(median "${read_cpu[@]}") | $(median "${read_rss[@]}") | $(median "${read_broker[@]}") |"
        echo
        echo "read_vs_kcat=$(calc "\"%.2f\", $READ / $KCAT")"
    } | tee "$REPORT"
    cp "$REPORT" "$BENCH_DIR/latest-read.md"
    exit 0
fi

if [[ $ONLY == all ]]; then
# Once with kcat's defaults, for the record (see the report's notes).
wait_for_services
timing=$({ time kcat -C -b "$KAFKA_BROKERS" -t "$TOPIC" -o beginning -e -q >/dev/null 2>"$WORK/kcat.err"; } 2>&1) \
    || die "kcat -C failed: $(cat "$WORK/kcat.err")"
KCAT_DEFAULT_SECONDS=${timing%% *}
fi # $ONLY == all

# ---------------------------------------------------------------- kafka2mysql drain

# drain_runs TOPIC FORMAT NAME: --runs drains of TOPIC (record_format FORMAT)
# into the empty table; fills drain_rates, drain_cpu, drain_rss, drain_mysqld,
# drain_broker, drain_connections and adds to drain_notes.
drain_runs() {
    local topic=$1 format=$2 name=$3 run attempt config log m0 b0 m1 b1 started seconds cpu rss rows pid
    drain_rates=() drain_cpu=() drain_rss=() drain_mysqld=() drain_broker=() drain_connections=()
    for run in $(seq "$RUNS"); do
        for attempt in 1 2; do
            wait_for_services
            create_table "$TABLE"
            settle_database
            config="$WORK/conf/$name-$run-$attempt.toml"
            log="$WORK/$name-$run-$attempt.log"
            write_config "$config" "$topic" "${PREFIX}_${name}_${run}_$attempt" "$TABLE" "$format"
            m0=$(mysqld_cpu) b0=$(broker_cpu)
            started=$(now)
            "$BIN" run --config "$config" >"$log" 2>&1 &
            pid=$!
            SERVICE_PIDS=("$pid")
            wait_for_lag_zero "$config" "$pid" "$DRAIN_DEADLINE_SECONDS" \
                || die "kafka2mysql did not drain $topic within ${DRAIN_DEADLINE_SECONDS}s; see $log"
            seconds=$(calc "\"%.3f\", $(now) - $started")
            cpu=$(cpu_seconds "$pid") rss=$(peak_rss_kib "$pid")
            m1=$(mysqld_cpu) b1=$(broker_cpu)
            kill -TERM "$pid"
            wait "$pid" || die "kafka2mysql exited with $? after SIGTERM; see $log"
            SERVICE_PIDS=()
            rows=$(row_count "$TABLE")
            ((rows == RECORDS)) || die "the table holds $rows rows after the drain, expected $RECORDS; see $log"
            say "$name run $run: ${seconds}s, $(calc "\"%.0f\", $RECORDS / $seconds") records/s, CPU ${cpu}s, peak RSS $((rss / 1024)) MiB, at most $PEAK_CONNECTIONS database connections"
            if disturbed "$log" && ((attempt == 1)); then
                say "$name run $run logged warnings (a service was away?); running it again"
                continue
            fi
            disturbed "$log" && drain_notes+=("$name run $run logged warnings: $(grep -E -m1 '\[(WARN|ERROR)\]' "$log" | cut -c1-160)")
            break
        done
        drain_rates+=("$(calc "\"%.0f\", $RECORDS / $seconds")")
        drain_cpu+=("$(calc "\"%.2f\", $cpu * 1000000 / $RECORDS")")
        drain_rss+=("$(calc "\"%.1f\", $rss / 1024")")
        drain_mysqld+=("$(server_per_million "$m0" "$m1")")
        drain_broker+=("$(server_per_million "$b0" "$b1")")
        drain_connections+=("$PEAK_CONNECTIONS")
    done
}

if [[ $ONLY != latency ]]; then
drain_notes=()
# The JSON topic has been read whole by kcat and the read path by now (with
# --only drain, read it once here); read the Debezium topic once too, so that
# neither drain pays a first read.
wait_for_services
for topic in "$DBZ_TOPIC" "$TOPIC"; do
    [[ $ONLY == all && $topic == "$TOPIC" || $ONLY == drain && $topic == "$DBZ_TOPIC" ]] && continue
    kcat -C -b "$KAFKA_BROKERS" -t "$topic" -o beginning -e -q -X fetch.wait.max.ms=10 >/dev/null 2>"$WORK/kcat.err" \
        || die "kcat -C failed: $(cat "$WORK/kcat.err")"
done
if [[ $ONLY == all ]]; then
    drain_runs "$DBZ_TOPIC" debezium debezium
    dbz_rates=("${drain_rates[@]}") dbz_cpu=("${drain_cpu[@]}") dbz_rss=("${drain_rss[@]}")
    dbz_mysqld=("${drain_mysqld[@]}") dbz_broker=("${drain_broker[@]}")
fi
drain_runs "$TOPIC" json drain

if [[ $ONLY == drain ]]; then
    # The database's own rate for the same rows in two orders: by id (as
    # they were produced, and as a drain of a few partitions writes them,
    # all partitions moving together) and partition after partition, each
    # in offset order (as a drain writes them when it reads a window of
    # partitions at a time and each partition's backlog in one turn). The
    # partitions come from the topic itself (librdkafka's partitioner).
    say "writing the rows in the topic's partition order into $WORK/by-partition.tsv"
    kcat -C -b "$KAFKA_BROKERS" -t "$TOPIC" -o beginning -e -q -f '%p\t%k\n' 2>"$WORK/kcat.err" \
        | sort -s -n -k1,1 | cut -f2 >"$WORK/keys-by-partition" \
        || die "kcat -C failed: $(cat "$WORK/kcat.err")"
    # A record's key is its row's id, the first field of the row's line.
    awk -F'\t' 'NR == FNR { row[$1] = $0; next } { print row[$1] }' "$DATA_TSV" "$WORK/keys-by-partition" \
        >"$WORK/by-partition.tsv"
    rm -f "$WORK/keys-by-partition"
    load_runs "$DATA_TSV" "write limit, id order"
    by_id_rates=("${load_rates[@]}") by_id_mysqld=("${load_mysqld[@]}")
    load_runs "$WORK/by-partition.tsv" "write limit, partition order"
    by_partition_rates=("${load_rates[@]}") by_partition_mysqld=("${load_mysqld[@]}")
    rm -f "$WORK/by-partition.tsv"
    {
        echo "## kafka2mysql drain ($(date -u '+%Y-%m-%d %H:%M UTC'), $ID, --only drain)"
        echo
        echo "$(num "$RECORDS") JSON records of ${VALUE_BYTES} bytes, $PARTITIONS partitions; kafka2mysql $GIT_REV; median of $RUNS run(s);"
        echo "worker.max_buffered_bytes: ${BUFFERED_BYTES:-the default}."
        echo
        echo "| partitions | records/s | CPU s / 1M records | peak RSS MiB | database connections (most seen) | mysqld CPU s / 1M | broker CPU s / 1M |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        echo "| $PARTITIONS | $(median "${drain_rates[@]}") [$(range %.0f "${drain_rates[@]}")] | $(median "${drain_cpu[@]}") | $(median "${drain_rss[@]}") | $(median "${drain_connections[@]}") | $(median "${drain_mysqld[@]}") | $(median "${drain_broker[@]}") |"
        for note in "${drain_notes[@]}"; do
            echo "Note: $note"
        done
        echo
        echo "The database alone, the same rows (LOAD DATA LOCAL INFILE, 1 client):"
        echo
        echo "| rows in | rows/s | mysqld CPU s / 1M |"
        echo "| --- | ---: | ---: |"
        echo "| id order | $(median "${by_id_rates[@]}") [$(range %.0f "${by_id_rates[@]}")] | $(median "${by_id_mysqld[@]}") |"
        echo "| partition order | $(median "${by_partition_rates[@]}") [$(range %.0f "${by_partition_rates[@]}")] | $(median "${by_partition_mysqld[@]}") |"
        echo
        echo "partition_order_vs_id_order=$(calc "\"%.2f\", $(median "${by_partition_rates[@]}") / $(median "${by_id_rates[@]}")")"
    } | tee "$REPORT"
    cp "$REPORT" "$BENCH_DIR/latest-drain.md"
    exit 0
fi
fi # $ONLY != latency

# ---------------------------------------------------------------- latency

wait_for_services
LATENCY_RECORDS=$((LATENCY_RATE * LATENCY_SECONDS))
say "latency: $LATENCY_RECORDS records at $LATENCY_RATE/s into topic $LATENCY_TOPIC"
TOPICS_CREATED+=("$LATENCY_TOPIC")
services_retry topic-create "$LATENCY_TOPIC" "$PARTITIONS" || die "could not create topic $LATENCY_TOPIC"
create_table "$LATENCY_TABLE"
config="$WORK/conf/latency.toml"
log="$WORK/latency.log"
write_config "$config" "$LATENCY_TOPIC" "${PREFIX}_latency" "$LATENCY_TABLE"
"$BIN" run --config "$config" >"$log" 2>&1 &
pid=$!
SERVICE_PIDS=("$pid")
# Running: the status file lists every partition as flowing.
deadline=$((SECONDS + 60))
until [[ $("$BIN" status --config "$config" --json 2>/dev/null | grep -c '"state": "flowing"' || true) == "$PARTITIONS" ]]; do
    ((SECONDS < deadline)) || die "kafka2mysql did not start on $LATENCY_TOPIC within 60s; see $log"
    kill -0 "$pid" 2>/dev/null || die "kafka2mysql exited at start; see $log"
    sleep 0.2
done
sleep 1
settle_database
# A paced producer: each record stamped with the wall clock in ms as it is
# handed to kcat (linger.ms=1: the producer adds about a millisecond).
"$RECORDS_BIN" paced "$LATENCY_RATE" "$LATENCY_SECONDS" "$((RECORDS + 1))" |
    kcat -P -b "$KAFKA_BROKERS" -t "$LATENCY_TOPIC" -K $'\t' -X linger.ms=1 -X compression.codec=none \
    || die "the latency producer failed"
wait_for_lag_zero "$config" "$pid" 60 || die "kafka2mysql did not catch up on $LATENCY_TOPIC; see $log"
latency_rss=$(peak_rss_kib "$pid")
kill -TERM "$pid"
wait "$pid" || die "kafka2mysql exited with $? after SIGTERM; see $log"
SERVICE_PIDS=()
rows=$(row_count "$LATENCY_TABLE")
((rows == LATENCY_RECORDS)) || die "the latency table holds $rows rows, expected $LATENCY_RECORDS; see $log"
read -r LAT_P50 LAT_P99 LAT_MAX < <(
    mysql_k2m -N -e "SELECT UNIX_TIMESTAMP(inserted_at) * 1000 - produced_ms FROM \`$LATENCY_TABLE\`" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.1f %.1f %.1f\n", v[int(NR * 0.50 + 0.5)], v[int(NR * 0.99 + 0.5)], v[NR] }'
)
latency_note=""
disturbed "$log" && latency_note="(the service logged warnings during this run: $(grep -E -m1 '\[(WARN|ERROR)\]' "$log" | cut -c1-160))"
say "latency: p50 ${LAT_P50} ms, p99 ${LAT_P99} ms, max ${LAT_MAX} ms"
if [[ $ONLY == latency ]]; then
    {
        echo "## kafka2mysql latency ($(date -u '+%Y-%m-%d %H:%M UTC'), $ID, --only latency)"
        echo
        echo "$LATENCY_RATE records/s for ${LATENCY_SECONDS}s, $PARTITIONS partitions; kafka2mysql $GIT_REV."
        echo
        echo "| latency, produce to insert | p50 | p99 | max |"
        echo "| --- | ---: | ---: | ---: |"
        echo "| kafka2mysql (peak RSS $((latency_rss / 1024)) MiB) | ${LAT_P50} ms | ${LAT_P99} ms | ${LAT_MAX} ms |"
        [[ -z $latency_note ]] || echo "Note: $latency_note"
    } | tee "$REPORT"
    cp "$REPORT" "$BENCH_DIR/latest-latency.md"
    exit 0
fi

# ---------------------------------------------------------------- report

LOAD=$(median "${load_rates[@]}")
KCAT=$(median "${kcat_rates[@]}")
DRAIN=$(median "${drain_rates[@]}")
READ=$(median "${read_rates[@]}")
R1=$(calc "\"%.2f\", $DRAIN / $LOAD")
R2=$(calc "\"%.2f\", $READ / $KCAT")
DBZ=$(median "${dbz_rates[@]}")
R3=$(calc "\"%.2f\", $DBZ / $DRAIN")
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
MARIADB_VERSION=$(mysql_k2m -N -e 'SELECT VERSION()')
# budget A... -- B... [-- C...]: the sum of the groups' medians in CPU seconds
# per million records, and the rate at which that would use every CPU.
budget() {
    local total=0 group=() m
    for arg in "$@" --; do
        if [[ $arg == -- ]]; then
            m=$(median "${group[@]}")
            [[ $m == n/a ]] && { echo "n/a"; return; }
            total=$(calc "\"%.2f\", $total + $m")
            group=()
        else
            group+=("$arg")
        fi
    done
    echo "$total s: all $(nproc) CPUs busy at most $(num "$(calc "\"%.0f\", $(nproc) * 1000000 / $total")") records/s"
}

{
    echo "## kafka2mysql benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $ID$( ((QUICK)) && echo ", --quick"))"
    echo
    echo "$(num "$RECORDS") JSON records of ${VALUE_BYTES} bytes (keyed by id, $PARTITIONS partitions, produced by kcat in ${PRODUCE_SECONDS}s);"
    echo "$(nproc) CPUs ($CPU_MODEL), ${MEM_GIB} GiB; Kafka ${KAFKA_VERSION:-?}, MariaDB $MARIADB_VERSION; kafka2mysql $GIT_REV."
    echo "Median of $RUNS run(s), range in brackets. CPU and RSS columns are the measured client's"
    echo "(kcat, kafka2mysql, read_path); the server columns are what the database server and the broker spent"
    echo "meanwhile, per million records (they include any other load on this machine)."
    echo
    echo "| measurement | records/s | CPU s / 1M records | peak RSS MiB | mysqld CPU s / 1M | broker CPU s / 1M |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    echo "| write limit: LOAD DATA LOCAL INFILE, 1 client | $(num "$LOAD") [$(range %.0f "${load_rates[@]}")] | | | $(median "${load_mysqld[@]}") | |"
    echo "| read limit: kcat -C -e (fetch.wait.max.ms=10), whole topic | $(num "$KCAT") [$(range %.0f "${kcat_rates[@]}")] | $(median "${kcat_cpu[@]}") | | | $(median "${kcat_broker[@]}") |"
    echo "| kafka2mysql drain, upsert, start to lag 0 | $(num "$DRAIN") [$(range %.0f "${drain_rates[@]}")] | $(median "${drain_cpu[@]}") | $(median "${drain_rss[@]}") | $(median "${drain_mysqld[@]}") | $(median "${drain_broker[@]}") |"
    echo "| kafka2mysql drain of the same rows as Debezium events (${DBZ_VALUE_BYTES} bytes, no schemas), start to lag 0 | $(num "$DBZ") [$(range %.0f "${dbz_rates[@]}")] | $(median "${dbz_cpu[@]}") | $(median "${dbz_rss[@]}") | $(median "${dbz_mysqld[@]}") | $(median "${dbz_broker[@]}") |"
    echo "| kafka2mysql read path, no database (examples/read_path) | $(num "$READ") [$(range %.0f "${read_rates[@]}")] | $(median "${read_cpu[@]}") | $(median "${read_rss[@]}") | | $(median "${read_broker[@]}") |"
    echo
    echo "| latency, $LATENCY_RATE records/s for ${LATENCY_SECONDS}s, produce to insert | p50 | p99 | max |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| kafka2mysql (peak RSS $((latency_rss / 1024)) MiB) | ${LAT_P50} ms | ${LAT_P99} ms | ${LAT_MAX} ms |"
    echo
    echo "Where the time goes (CPU seconds per million records, medians):"
    echo
    echo "- write limit: mysqld $(median "${load_mysqld[@]}") s, in one server thread (one client);"
    echo "- drain: kafka2mysql $(median "${drain_cpu[@]}") + mysqld $(median "${drain_mysqld[@]}") + broker $(median "${drain_broker[@]}") = $(budget "${drain_cpu[@]}" -- "${drain_mysqld[@]}" -- "${drain_broker[@]}");"
    echo "- read path: kafka2mysql $(median "${read_cpu[@]}") + broker $(median "${read_broker[@]}") = $(budget "${read_cpu[@]}" -- "${read_broker[@]}"),"
    echo "  kcat: $(median "${kcat_cpu[@]}") + broker $(median "${kcat_broker[@]}") = $(budget "${kcat_cpu[@]}" -- "${kcat_broker[@]}")."
    echo
    echo "Config: the documented defaults (README.md, Configuration reference) except commit.interval_ms = 100, so that the"
    echo "drain's end (lag 0, read from the committed offsets, polled every 0.1 s) is seen within about 0.2 s."
    echo "kcat with its default fetch.wait.max.ms (500 ms) took ${KCAT_DEFAULT_SECONDS}s for the same topic: it idles at the"
    echo "end until a fetch comes back empty; the read limit above leaves that wait out."
    for note in "${drain_notes[@]}" ${latency_note:+"$latency_note"}; do
        echo "Note: $note"
    done
    echo "Debezium: the drain of the same rows as change events runs at $R3 times the JSON drain's rate"
    echo "(the aim is at least 0.80)."
    echo
    echo "debezium_vs_json=$R3"
    echo "e2e_vs_write_limit=$R1 read_vs_kcat=$R2"
} | tee "$REPORT"
cp "$REPORT" "$BENCH_DIR/latest.md"
