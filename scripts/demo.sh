#!/usr/bin/env bash
# The demo: one command that shows kafka2mysql at work on this machine.
#
#   scripts/demo.sh
#
# It builds the binary, starts a local Kafka broker and MariaDB server
# (scripts/services.sh up, which installs what is missing), creates the topic
# demo_orders (4 partitions) and the table demo_orders, produces about 5,000
# orders with keys (among them 20 partial updates, 2 tombstones and 50 bad
# records of four kinds), starts the service the way an operator does
# (scripts/run.sh start), waits until it has caught up, shows rows, dead
# letters and `kafka2mysql status`, checks the counts, and stops the service.
#
# Everything it writes lives under .services/demo (ignored by git). It can be
# run again: the topic, the table, the dead-letter table and the group's
# offsets start afresh each time. Exit code 0 when every step worked.
set -euo pipefail

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
SERVICES="$REPO/scripts/services.sh"
RUN="$REPO/scripts/run.sh"
DEMO_DIR="$REPO/.services/demo"
CONFIG="$DEMO_DIR/conf/demo.toml"
RECORDS_DIR="$DEMO_DIR/records"

TOPIC=demo_orders
PARTITIONS=4
TABLE=demo_orders
DEAD_LETTER_TABLE=demo_dead_letters
GROUP=demo-orders
ORDERS=5000
UPDATED_IDS=20 # ids 1..20 get a second record that only changes status
TOMBSTONE_IDS=(21 22)
CATCH_UP_DEADLINE_SECONDS=120

# Bold headings on a terminal, plain text in a file.
BOLD="" RED="" GREEN="" PLAIN=""
if [[ -t 1 ]]; then
    BOLD=$'\033[1m' RED=$'\033[1;31m' GREEN=$'\033[1;32m' PLAIN=$'\033[0m'
fi
STEP=0
STEPS=9
step() {
    STEP=$((STEP + 1))
    printf '\n%s==> [%d/%d] %s%s\n' "$BOLD" "$STEP" "$STEPS" "$*" "$PLAIN"
}
say() { printf '    %s\n' "$*"; }
die() {
    printf '\n%sdemo failed:%s %s\n' "$RED" "$PLAIN" "$*" >&2
    exit 1
}

# One run at a time on these ports: the script starts again under the lock
# that `scripts/services.sh ports-lock` names ("locked").
[[ -n ${K2M_PORTS_LOCKED:-} ]] || exec "$SERVICES" locked "$REPO/scripts/demo.sh" "$@"

# Stops the demo service on every exit, also after a failure or Ctrl-C, so the
# demo never leaves a process behind.
STARTED=0
cleanup() {
    local rc=$?
    if ((STARTED)); then
        if ((rc != 0)); then
            echo "--- last lines of $DEMO_DIR/logs/demo.log:" >&2
            tail -n 15 "$DEMO_DIR/logs/demo.log" >&2 2>/dev/null || true
        fi
        "$RUN" stop --config "$CONFIG" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mysql_query() { "$SERVICES" mysql "$@"; }

# ---------------------------------------------------------------- 1. build

step "building kafka2mysql (cargo build --release)"
command -v cargo >/dev/null 2>&1 || die "cargo is not installed; install Rust from https://rustup.rs, then run the demo again"
(cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
export KAFKA2MYSQL_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kafka2mysql"
[[ -x $KAFKA2MYSQL_BIN ]] || die "the build did not produce $KAFKA2MYSQL_BIN"
say "binary: $KAFKA2MYSQL_BIN"

# ---------------------------------------------------------------- 2. services

step "starting Kafka and MariaDB (scripts/services.sh up; the first time installs and downloads them)"
services_env=$("$SERVICES" up) || die "scripts/services.sh up failed (see its messages above)"
# KAFKA_BROKERS, MYSQL_URL and MYSQL_PASSWORD: a throwaway password for a
# database that only listens on loopback. The service reads MYSQL_PASSWORD
# from the environment that run.sh passes on.
while IFS='=' read -r key value; do
    case $key in
        KAFKA_BROKERS | MYSQL_URL | MYSQL_PASSWORD) export "$key=$value" ;;
    esac
done <<<"$services_env"
[[ -n ${KAFKA_BROKERS:-} && -n ${MYSQL_URL:-} && -n ${MYSQL_PASSWORD:-} ]] \
    || die "scripts/services.sh up did not print KAFKA_BROKERS, MYSQL_URL and MYSQL_PASSWORD"
"$SERVICES" status | sed 's/^/    /'

# ---------------------------------------------------------------- 3. config

step "writing the demo config $CONFIG"
mkdir -p "$DEMO_DIR/conf" "$RECORDS_DIR"
# A demo left running by an interrupted earlier run must not see the topic go.
if [[ -f $CONFIG ]]; then
    "$RUN" stop --config "$CONFIG" 2>&1 | sed 's/^/    /'
fi
cat >"$CONFIG" <<EOF
# Written by scripts/demo.sh. Every key not set here has its default (see
# conf/kafka2mysql.toml). The password comes from MYSQL_PASSWORD.
[kafka]
brokers = ["$KAFKA_BROKERS"]
topic = "$TOPIC"
group = "$GROUP"
offset_reset = "earliest"

[mysql]
url = "$MYSQL_URL"
table = "$TABLE"
key_columns = ["id"]
write_mode = "upsert"
delete_on_tombstone = true
dead_letter_table = "$DEAD_LETTER_TABLE"

[commit]
every_messages = 1000
interval_ms = 1000

[log]
file = "../logs/demo.log"
level = "info"
stats_interval_ms = 5000
EOF
sed -n '/^\[/,$p' "$CONFIG" | sed 's/^/    /'

# ---------------------------------------------------------------- 4. topic and table

step "creating topic $TOPIC ($PARTITIONS partitions) and table $TABLE"
topics=$("$SERVICES" topic-list) || die "scripts/services.sh topic-list failed"
if grep -qx "$TOPIC" <<<"$topics"; then
    say "deleting the topic of an earlier run"
    "$SERVICES" topic-delete "$TOPIC" >/dev/null
fi
# Kafka deletes a topic in the background: creating it again fails until then.
deadline=$((SECONDS + 60))
until "$SERVICES" topic-create "$TOPIC" "$PARTITIONS" 2>"$DEMO_DIR/topic-create.err"; do
    ((SECONDS < deadline)) || { cat "$DEMO_DIR/topic-create.err" >&2; die "could not create topic $TOPIC within 60s"; }
    sleep 1
done
say "topic $TOPIC: $PARTITIONS partitions"
mysql_query <<EOF || die "could not create table $TABLE"
DROP TABLE IF EXISTS \`$TABLE\`;
DROP TABLE IF EXISTS \`$DEAD_LETTER_TABLE\`;
CREATE TABLE \`$TABLE\` (
    id BIGINT PRIMARY KEY,
    customer VARCHAR(64) NOT NULL,
    amount DECIMAL(10,2),
    status VARCHAR(16),
    created_at DATETIME(3) NULL
);
EOF
mysql_query -e "SHOW CREATE TABLE \`$TABLE\`\\G" | sed -n '/CREATE TABLE/,$p' | sed 's/^/    /'

# ---------------------------------------------------------------- 5. records

step "producing $ORDERS orders, $UPDATED_IDS updates and ${#TOMBSTONE_IDS[@]} tombstones with kcat"
rm -f "$RECORDS_DIR"/partition-*.txt
# One line per record, KEY:VALUE (kcat -K:), the key being the order id; an
# order goes to partition id % 4, so that its update and its tombstone follow
# it in the same partition. One order in a hundred is bad (ids 51, 152, 253,
# 350, ...: spread over the partitions), in turn: invalid JSON, an amount that
# is not a number, a customer longer than 64 characters, an id that is not a
# number (a missing id would be taken from the record key).
awk -v orders="$ORDERS" -v updated="$UPDATED_IDS" -v tombstones="${TOMBSTONE_IDS[*]}" \
    -v partitions="$PARTITIONS" -v dir="$RECORDS_DIR" '
    function out(id, line) { print line > (dir "/partition-" (id % partitions) ".txt") }
    BEGIN {
        split("new paid packed shipped", statuses, " ")
        long = ""
        for (i = 0; i < 80; i++) long = long "x"
        for (id = 1; id <= orders; id++) {
            customer = sprintf("customer-%03d", id % 250)
            amount = sprintf("%.2f", (id * 3797) % 100000 / 100)
            status = statuses[1 + id % 3]
            created = sprintf("2025-01-%02d %02d:%02d:%02d.%03d", 1 + int(id / 1440), int(id / 60) % 24, id % 60, id % 60, id % 1000)
            k = int(id / 100) + 1
            if (id == 100 * (k - 1) + 50 + k % 4 && k <= orders / 100) {
                kind = int(k / 4) % 4
                if (kind == 0) line = sprintf("{\"id\": %d, \"customer\": \"%s\", \"amount\": %s", id, customer, amount)
                else if (kind == 1) line = sprintf("{\"id\": %d, \"customer\": \"%s\", \"amount\": \"twelve\", \"status\": \"%s\"}", id, customer, status)
                else if (kind == 2) line = sprintf("{\"id\": %d, \"customer\": \"%s\", \"amount\": %s, \"status\": \"%s\"}", id, long, amount, status)
                else line = sprintf("{\"id\": \"order-%d\", \"customer\": \"%s\", \"amount\": %s, \"status\": \"%s\"}", id, customer, amount, status)
            } else {
                line = sprintf("{\"id\": %d, \"customer\": \"%s\", \"amount\": %s, \"status\": \"%s\", \"created_at\": \"%s\"}", id, customer, amount, status, created)
            }
            out(id, id ":" line)
        }
        # Updates: upsert sets the fields the record has and keeps the others
        # (amount, created_at). customer is repeated: MySQL checks the INSERT
        # half of INSERT ... ON DUPLICATE KEY UPDATE first, and customer is
        # NOT NULL without a default (error 1364).
        for (id = 1; id <= updated; id++) out(id, id ":" sprintf("{\"id\": %d, \"customer\": \"customer-%03d\", \"status\": \"shipped\"}", id, id % 250))
        # Tombstones: the key and an empty value, which kcat -Z sends as null.
        n = split(tombstones, ids, " ")
        for (i = 1; i <= n; i++) out(ids[i], ids[i] ":")
    }'
for ((p = 0; p < PARTITIONS; p++)); do
    # From standard input: a file argument would be sent as one message.
    kcat -P -b "$KAFKA_BROKERS" -t "$TOPIC" -p "$p" -K: -Z <"$RECORDS_DIR/partition-$p.txt" \
        || die "kcat could not produce partition $p"
done
"$SERVICES" log-end-offsets "$TOPIC" | while read -r p offset; do
    say "partition $p: $offset records"
done
bad=$((ORDERS / 100))
say "bad records: $bad (sample lines in $RECORDS_DIR)"
# The group's offsets may point into the topic of an earlier run: start over.
"$KAFKA2MYSQL_BIN" reset-offsets --config "$CONFIG" --to earliest >/dev/null \
    || die "kafka2mysql reset-offsets --to earliest failed"
say "group $GROUP reset to the earliest offsets (kafka2mysql reset-offsets --to earliest)"

# ---------------------------------------------------------------- 6. run

step "starting the service: scripts/run.sh start --config $CONFIG"
STARTED=1
"$RUN" start --config "$CONFIG" 2>&1 | sed 's/^/    /' || die "scripts/run.sh start failed"
say "log: $DEMO_DIR/logs/demo.log"

# ---------------------------------------------------------------- 7. catch up

step "waiting until the lag is 0 on every partition (at most ${CATCH_UP_DEADLINE_SECONDS}s)"
wait_start=$SECONDS
deadline=$((SECONDS + CATCH_UP_DEADLINE_SECONDS))
last_lags=""
next_report=0
while :; do
    # Exit 3: not running; 1 (a partition retrying, say) is watched on.
    rc=0
    status_json=$("$KAFKA2MYSQL_BIN" status --config "$CONFIG" --json 2>&1) || rc=$?
    ((rc != 3)) || die "the service is not running any more; see $DEMO_DIR/logs/demo.log and $DEMO_DIR/logs/demo.out"
    # The JSON is pretty-printed: one "lag" line per partition.
    lags=$(sed -n 's/^ *"lag": *\([0-9a-z]*\),*$/\1/p' <<<"$status_json" | tr '\n' ' ')
    lags=${lags% }
    if [[ -n $lags && $(wc -w <<<"$lags") -eq $PARTITIONS && -z $(tr -d ' 0' <<<"$lags") ]]; then
        say "caught up after $((SECONDS - wait_start))s: lag per partition $lags"
        break
    fi
    if [[ $lags != "$last_lags" ]] && ((SECONDS >= next_report)); then
        say "lag per partition: ${lags:-unknown}"
        last_lags=$lags
        next_report=$((SECONDS + 3))
    fi
    if ((SECONDS >= deadline)); then
        "$KAFKA2MYSQL_BIN" status --config "$CONFIG" >&2 || true
        die "the lag did not reach 0 within ${CATCH_UP_DEADLINE_SECONDS}s (last: ${lags:-unknown}); see $DEMO_DIR/logs/demo.log"
    fi
    sleep 1
done

# ---------------------------------------------------------------- 8. results

step "what is in MySQL"
echo "    A sample of rows (ids 1-20 were updated to shipped, 21 and 22 deleted by tombstones):"
mysql_query -t -e "SELECT * FROM \`$TABLE\` ORDER BY id LIMIT 25" | sed 's/^/    /'
rows=$(mysql_query -N -e "SELECT COUNT(*) FROM \`$TABLE\`")
shipped=$(mysql_query -N -e "SELECT COUNT(*) FROM \`$TABLE\` WHERE id <= $UPDATED_IDS AND status = 'shipped' AND amount IS NOT NULL AND created_at IS NOT NULL")
deleted=$(mysql_query -N -e "SELECT COUNT(*) FROM \`$TABLE\` WHERE id IN ($(tr ' ' , <<<"${TOMBSTONE_IDS[*]}"))")
dead_letters=$(mysql_query -N -e "SELECT COUNT(*) FROM \`$DEAD_LETTER_TABLE\` WHERE topic = '$TOPIC'")
echo
echo "    Rows in $TABLE: $rows"
echo
echo "    Dead letters in $DEAD_LETTER_TABLE: $dead_letters, each tried $(mysql_query -N -e "SELECT MAX(attempts) FROM \`$DEAD_LETTER_TABLE\`") times"
echo "    (the records themselves are kept in its record_key and record_value columns):"
mysql_query -t -e "SELECT \`partition\`, \`offset\`, error_class, error_code, LEFT(error_text, 90) AS error_text, attempts
    FROM \`$DEAD_LETTER_TABLE\` WHERE topic = '$TOPIC' ORDER BY \`offset\`, \`partition\` LIMIT 8" | sed 's/^/    /'
((dead_letters <= 8)) || say "... and $((dead_letters - 8)) more, by kind:"
mysql_query -t -e "SELECT error_class, error_code, COUNT(*) AS records, LEFT(MIN(error_text), 70) AS example
    FROM \`$DEAD_LETTER_TABLE\` WHERE topic = '$TOPIC'
    GROUP BY error_class, error_code, SUBSTRING_INDEX(error_text, ':', 1) ORDER BY records DESC, error_code" | sed 's/^/    /'
echo
echo "    kafka2mysql status --config $CONFIG"
"$KAFKA2MYSQL_BIN" status --config "$CONFIG" | sed 's/^/    /'

expected_rows=$((ORDERS - bad - ${#TOMBSTONE_IDS[@]}))
failures=()
((rows == expected_rows)) || failures+=("expected $expected_rows rows in $TABLE ($ORDERS orders - $bad bad - ${#TOMBSTONE_IDS[@]} deleted), found $rows")
((dead_letters == bad)) || failures+=("expected $bad dead letters, found $dead_letters")
((shipped == UPDATED_IDS)) || failures+=("expected ids 1-$UPDATED_IDS shipped with amount and created_at kept, found $shipped")
((deleted == 0)) || failures+=("expected ids ${TOMBSTONE_IDS[*]} deleted by their tombstones, found $deleted of them")

# ---------------------------------------------------------------- 9. stop

step "stopping the service: scripts/run.sh stop --config $CONFIG"
"$RUN" stop --config "$CONFIG" 2>&1 | sed 's/^/    /' || die "scripts/run.sh stop failed"
STARTED=0
"$RUN" status --config "$CONFIG" | sed 's/^/    /' || true

if ((${#failures[@]} > 0)); then
    printf '    %s\n' "${failures[@]}" >&2
    die "the results are not what the demo expected"
fi
printf '\n%sdemo OK:%s %d rows, %d dead letters, %d updated, %d deleted.\n' "$GREEN" "$PLAIN" \
    "$rows" "$dead_letters" "$UPDATED_IDS" "${#TOMBSTONE_IDS[@]}"
cat <<EOF
Try it yourself:
  eval "\$(scripts/services.sh env)"      # exports MYSQL_PASSWORD (and the addresses)
  scripts/run.sh start --config $CONFIG
  $KAFKA2MYSQL_BIN status --config $CONFIG
  tail -f $DEMO_DIR/logs/demo.log
EOF
