#!/usr/bin/env bash
# Real Kafka and MariaDB for the demo and the tests (DESIGN.md sections 7 and 8).
#
#   scripts/services.sh up | down | status | env | install
#   scripts/services.sh stop-kafka | start-kafka | stop-mysql | start-mysql
#   scripts/services.sh topic-create NAME PARTITIONS | topic-delete NAME
#   scripts/services.sh delete-records TOPIC PARTITION OFFSET
#   scripts/services.sh group-offsets GROUP
#   scripts/services.sh log-end-offsets TOPIC | log-start-offsets TOPIC
#   scripts/services.sh mysql [mariadb client args]
#
# Apache Kafka 3.9.1 runs as a single KRaft node (broker and controller in one
# JVM) from jars that Maven resolves from Maven Central; MariaDB runs from the
# Debian package with its own data directory. Both listen on loopback ports
# that do not clash with system services, and keep everything they write under
# $REPO/.services (ignored by git), so removing that directory resets them.
#
# Every lifecycle command is idempotent and serialised by a lock; the tool
# commands only talk to the running services and may run in parallel.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="$REPO/.services"
KAFKA_LIBS="$SERVICES_DIR/kafka-libs"
KAFKA_DIR="$SERVICES_DIR/kafka"
MARIADB_DIR="$SERVICES_DIR/mariadb"

KAFKA_VERSION=3.9.1
KAFKA_HOST=127.0.0.1
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093
KAFKA_BROKERS="$KAFKA_HOST:$KAFKA_PORT"

MYSQL_HOST=127.0.0.1
MYSQL_PORT=13306
MYSQL_DATABASE=kafka2mysql
MYSQL_USER=k2m
# A throwaway password for a database that only listens on loopback.
MYSQL_TEST_PASSWORD=k2m-test-password
MYSQL_URL="mysql://$MYSQL_USER@$MYSQL_HOST:$MYSQL_PORT/$MYSQL_DATABASE"
MYSQL_SOCKET="$MARIADB_DIR/mysqld.sock"

START_DEADLINE_SECONDS=90
STOP_DEADLINE_SECONDS=60

# The command-line tools start a JVM each time and the tests call them often:
# keep them small and quick to start (C1 only, serial GC, class data sharing).
TOOL_JAVA_OPTS=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto)

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install

# Installs the Debian packages and tools that are missing, running
# `apt-get update` once first and only when something is missing.
install_missing() {
    local missing=()
    command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]}"
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [[ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
        log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
        mkdir -p "$KAFKA_LIBS"
        # outputDirectory must be absolute: Maven resolves a relative one against the pom's directory.
        mvn -B -q -f "$REPO/scripts/kafka-pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime \
            || die "maven could not resolve the Kafka jars (scripts/kafka-pom.xml)"
        [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing from $KAFKA_LIBS after mvn"
    fi
}

# ---------------------------------------------------------------- processes

# Prints the pids whose command line contains every given string (pure bash:
# the tests call this often and a fork per process would add up).
pids_matching() {
    local proc pattern matched args cmdline
    for proc in /proc/[0-9]*; do
        [[ $proc == "/proc/$BASHPID" ]] && continue
        mapfile -d '' args 2>/dev/null <"$proc/cmdline" || continue
        ((${#args[@]} > 0)) || continue
        cmdline="${args[*]}"
        matched=1
        for pattern in "$@"; do
            [[ $cmdline == *"$pattern"* ]] || { matched=0; break; }
        done
        ((matched)) && echo "${proc#/proc/}"
    done
    return 0
}

kafka_pids() { pids_matching kafka.Kafka "$KAFKA_DIR/server.properties"; }
mariadb_pids() { pids_matching mariadbd "--defaults-file=$MARIADB_DIR/my.cnf"; }

# A broker or server started from another checkout of this project holds our
# ports; it must go, or stop-kafka and friends would not reach it.
foreign_kafka_pids() {
    local pid
    for pid in $(pids_matching kafka.Kafka /.services/kafka/server.properties); do
        grep -qF -- "$KAFKA_DIR/server.properties" "/proc/$pid/cmdline" 2>/dev/null || echo "$pid"
    done
}
foreign_mariadb_pids() {
    local pid
    for pid in $(pids_matching mariadbd /.services/mariadb/my.cnf); do
        grep -qF -- "$MARIADB_DIR/my.cnf" "/proc/$pid/cmdline" 2>/dev/null || echo "$pid"
    done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Sends SIGTERM, waits up to the deadline, then SIGKILL.
terminate() {
    local name=$1
    shift
    local pids=("$@") pid deadline
    ((${#pids[@]} > 0)) || return 0
    log "stopping $name (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + STOP_DEADLINE_SECONDS))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "$name (pid $pid) ignored SIGTERM for ${STOP_DEADLINE_SECONDS}s, sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.2
                break
            fi
            sleep 0.1
        done
    done
}

tail_log() {
    local file=$1
    [[ -f $file ]] && { echo "--- last lines of $file:" >&2; tail -n 25 "$file" >&2; }
    return 0
}

# ---------------------------------------------------------------- kafka

java_tool() {
    local class=$1
    shift
    java "${TOOL_JAVA_OPTS[@]}" -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" \
        -cp "$KAFKA_LIBS/*" "$class" "$@"
}

write_kafka_config() {
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by scripts/services.sh; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# The kafka crate fetches with protocol v0: the broker converts record batches
# down to message format v0 for it.
log.message.downconversion.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    cat >"$KAFKA_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$KAFKA_DIR/logs/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
EOF
    cat >"$KAFKA_DIR/tools-log4j.properties" <<EOF
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
    # The tools fail within seconds instead of retrying for a minute when the
    # broker is down (a test that stops it must not hang on a tool).
    cat >"$KAFKA_DIR/tools.properties" <<EOF
request.timeout.ms=10000
default.api.timeout.ms=20000
EOF
}

kafka_answers() {
    if command -v kcat >/dev/null 2>&1; then
        kcat -b "$KAFKA_BROKERS" -L -m 3 2>/dev/null | grep -q "broker 1 at $KAFKA_BROKERS"
    else
        java_tool kafka.admin.BrokerApiVersionsCommand --bootstrap-server "$KAFKA_BROKERS" \
            --command-config "$KAFKA_DIR/tools.properties" 2>/dev/null | grep -q "$KAFKA_BROKERS"
    fi
}

start_kafka() {
    install_missing
    write_kafka_config
    local pids
    pids=$(kafka_pids)
    if [[ -n $pids ]]; then
        echo "$pids" | head -n1 >"$KAFKA_DIR/kafka.pid"
    else
        terminate "a Kafka broker of another checkout" $(foreign_kafka_pids)
        port_open "$KAFKA_HOST" "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by another program; kafka cannot start"
        port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is in use by another program; kafka cannot start"
        if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
            local cluster_id
            cluster_id=$(java_tool kafka.tools.StorageTool random-uuid)
            log "formatting Kafka storage in $KAFKA_DIR/data (cluster $cluster_id)"
            java_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >/dev/null \
                || die "kafka storage format failed"
        fi
        log "starting Kafka $KAFKA_VERSION on $KAFKA_BROKERS (log: $KAFKA_DIR/logs/server.log)"
        (
            cd "$KAFKA_DIR"
            exec 9>&- # the daemon must not inherit (and so hold) the lock
            exec setsid nohup java -Xmx512m -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
                -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
                -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
                </dev/null >>"$KAFKA_DIR/kafka.out" 2>&1
        ) &
        disown || true
    fi
    local deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until kafka_answers; do
        if [[ -z $(kafka_pids) ]]; then
            tail_log "$KAFKA_DIR/kafka.out"
            tail_log "$KAFKA_DIR/logs/server.log"
            die "kafka exited during start; see $KAFKA_DIR/logs/server.log and $KAFKA_DIR/kafka.out"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$KAFKA_DIR/logs/server.log"
            die "kafka did not answer a metadata request on $KAFKA_BROKERS within ${START_DEADLINE_SECONDS}s; see $KAFKA_DIR/logs/server.log"
        fi
        sleep 0.5
    done
    kafka_pids | head -n1 >"$KAFKA_DIR/kafka.pid"
}

stop_kafka() {
    terminate kafka $(kafka_pids)
    rm -f "$KAFKA_DIR/kafka.pid"
}

# ---------------------------------------------------------------- mariadb

write_mariadb_config() {
    mkdir -p "$MARIADB_DIR/data" "$MARIADB_DIR/tmp"
    cat >"$MARIADB_DIR/my.cnf" <<EOF
# Written by scripts/services.sh; edits are overwritten.
[mariadbd]
user=root
datadir=$MARIADB_DIR/data
tmpdir=$MARIADB_DIR/tmp
socket=$MYSQL_SOCKET
pid-file=$MARIADB_DIR/mysqld.pid
log-error=$MARIADB_DIR/mariadb.log
port=$MYSQL_PORT
bind-address=$MYSQL_HOST
skip-name-resolve
skip-external-locking
max_connections=500
innodb_buffer_pool_size=256M
local_infile=1
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
EOF
}

mariadb_root() {
    mariadb --no-defaults --socket="$MYSQL_SOCKET" --user=root --default-character-set=utf8mb4 "$@"
}

mariadb_answers_root() {
    mariadb_root --connect-timeout=2 -N -e 'SELECT 1' >/dev/null 2>&1
}

mariadb_answers_tcp() {
    MYSQL_PWD="$MYSQL_TEST_PASSWORD" mariadb --no-defaults --protocol=TCP --host="$MYSQL_HOST" --port="$MYSQL_PORT" \
        --user="$MYSQL_USER" --connect-timeout=2 --database="$MYSQL_DATABASE" -N -e 'SELECT 1' 2>/dev/null | grep -qx 1
}

start_mysql() {
    install_missing
    write_mariadb_config
    local pids
    pids=$(mariadb_pids)
    if [[ -z $pids ]]; then
        terminate "a MariaDB server of another checkout" $(foreign_mariadb_pids)
        port_open "$MYSQL_HOST" "$MYSQL_PORT" && die "port $MYSQL_PORT is in use by another program; mariadb cannot start"
        if [[ ! -f "$MARIADB_DIR/data/.kafka2mysql-initialised" ]]; then
            log "initialising the MariaDB data directory $MARIADB_DIR/data"
            rm -rf "$MARIADB_DIR/data"
            mkdir -p "$MARIADB_DIR/data"
            mariadb-install-db --defaults-file="$MARIADB_DIR/my.cnf" --user=root \
                --auth-root-authentication-method=normal --skip-test-db >"$MARIADB_DIR/install-db.log" 2>&1 \
                || { tail_log "$MARIADB_DIR/install-db.log"; die "mariadb-install-db failed; see $MARIADB_DIR/install-db.log"; }
            touch "$MARIADB_DIR/data/.kafka2mysql-initialised"
        fi
        rm -f "$MYSQL_SOCKET"
        log "starting MariaDB on $MYSQL_HOST:$MYSQL_PORT (log: $MARIADB_DIR/mariadb.log)"
        (
            cd "$MARIADB_DIR"
            exec 9>&- # the daemon must not inherit (and so hold) the lock
            exec setsid nohup mariadbd --defaults-file="$MARIADB_DIR/my.cnf" \
                </dev/null >>"$MARIADB_DIR/mariadbd.out" 2>&1
        ) &
        disown || true
    fi
    local deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until mariadb_answers_root; do
        if [[ -z $(mariadb_pids) ]]; then
            tail_log "$MARIADB_DIR/mariadb.log"
            die "mariadb exited during start; see $MARIADB_DIR/mariadb.log"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$MARIADB_DIR/mariadb.log"
            die "mariadb did not answer on $MYSQL_SOCKET within ${START_DEADLINE_SECONDS}s; see $MARIADB_DIR/mariadb.log"
        fi
        sleep 0.2
    done
    # Idempotent, so it also repairs grants that a test may have taken away.
    mariadb_root <<EOF || die "could not create database $MYSQL_DATABASE and user $MYSQL_USER; see $MARIADB_DIR/mariadb.log"
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_TEST_PASSWORD';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_TEST_PASSWORD';
ALTER USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_TEST_PASSWORD';
ALTER USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_TEST_PASSWORD';
GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'localhost' WITH GRANT OPTION;
GRANT FILE ON *.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT FILE ON *.* TO '$MYSQL_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
    deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until mariadb_answers_tcp; do
        if ((SECONDS >= deadline)); then
            tail_log "$MARIADB_DIR/mariadb.log"
            die "mariadb did not answer SELECT 1 as $MYSQL_USER on $MYSQL_HOST:$MYSQL_PORT within ${START_DEADLINE_SECONDS}s; see $MARIADB_DIR/mariadb.log"
        fi
        sleep 0.2
    done
}

stop_mysql() {
    terminate mariadb $(mariadb_pids)
}

# ---------------------------------------------------------------- commands

print_env() {
    echo "KAFKA_BROKERS=$KAFKA_BROKERS"
    echo "MYSQL_URL=$MYSQL_URL"
    echo "MYSQL_PASSWORD=$MYSQL_TEST_PASSWORD"
}

# Runs a lifecycle command under the lock, so that two `up`s do not race.
with_lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 300 9 || die "another scripts/services.sh holds $SERVICES_DIR/.lock"
    "$@"
}

cmd_up() {
    start_mysql
    start_kafka
    print_env
}

cmd_down() {
    stop_kafka
    stop_mysql
}

cmd_status() {
    local ok=0 pids
    pids=$(kafka_pids | tr '\n' ' ')
    if kafka_answers; then
        echo "kafka: up at $KAFKA_BROKERS (pid ${pids% })"
    else
        echo "kafka: down${pids:+ (pid ${pids% } runs but does not answer)}; log $KAFKA_DIR/logs/server.log"
        ok=1
    fi
    pids=$(mariadb_pids | tr '\n' ' ')
    if mariadb_answers_tcp; then
        echo "mariadb: up at $MYSQL_HOST:$MYSQL_PORT (pid ${pids% })"
    else
        echo "mariadb: down${pids:+ (pid ${pids% } runs but does not answer)}; log $MARIADB_DIR/mariadb.log"
        ok=1
    fi
    return $ok
}

need_kafka_libs() {
    [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" && -f "$KAFKA_DIR/tools.properties" ]] \
        || die "kafka is not set up; start it with scripts/services.sh up"
}

topic_tool() {
    need_kafka_libs
    java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
        --command-config "$KAFKA_DIR/tools.properties" "$@"
}

# Prints `PARTITION OFFSET` lines, sorted by partition.
offsets_at() {
    local topic=$1 time=$2 output
    need_kafka_libs
    output=$(java_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$KAFKA_BROKERS" \
        --command-config "$KAFKA_DIR/tools.properties" --topic "$topic" --time "$time") || exit 1
    [[ -n $output ]] || die "topic $topic has no partitions (does it exist?)"
    # GetOffsetShell prints topic:partition:offset; topic names cannot contain ':'.
    awk -F: 'NF == 3 { print $2, $3 }' <<<"$output" | sort -n
}

# Prints `TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG` lines from
# Kafka's consumer-groups tool; a group that does not exist prints nothing.
group_offsets() {
    local group=$1 output status=0
    need_kafka_libs
    output=$(java_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$KAFKA_BROKERS" \
        --command-config "$KAFKA_DIR/tools.properties" --timeout 20000 --describe --offsets --group "$group" 2>&1) || status=$?
    if grep -q "Consumer group '$group' does not exist" <<<"$output"; then
        return 0
    fi
    if ((status != 0)) || grep -q '^Error' <<<"$output"; then
        printf '%s\n' "$output" >&2
        die "kafka-consumer-groups --describe failed for group $group"
    fi
    awk '
        $1 == "GROUP" && $2 == "TOPIC" {
            for (i = 1; i <= NF; i++) column[$i] = i
            header = 1
            next
        }
        header && NF >= 6 {
            print $column["TOPIC"], $column["PARTITION"], $column["CURRENT-OFFSET"], $column["LOG-END-OFFSET"], $column["LAG"]
        }
    ' <<<"$output" | sort -k1,1 -k2,2n
}

delete_records() {
    local topic=$1 partition=$2 offset=$3 json
    need_kafka_libs
    [[ $partition =~ ^[0-9]+$ && $offset =~ ^-?[0-9]+$ ]] || die "usage: delete-records TOPIC PARTITION OFFSET"
    json=$(mktemp "${TMPDIR:-/tmp}/k2m-delete-records.XXXXXX.json")
    printf '{"version":1,"partitions":[{"topic":"%s","partition":%s,"offset":%s}]}\n' \
        "$topic" "$partition" "$offset" >"$json"
    local status=0
    java_tool org.apache.kafka.tools.DeleteRecordsCommand --bootstrap-server "$KAFKA_BROKERS" \
        --command-config "$KAFKA_DIR/tools.properties" --offset-json-file "$json" >"$json.out" 2>&1 || status=$?
    if ((status != 0)) || grep -qi 'error' "$json.out"; then
        cat "$json.out" >&2
        rm -f "$json" "$json.out"
        die "delete-records $topic $partition $offset failed"
    fi
    cat "$json.out"
    rm -f "$json" "$json.out"
}

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local command=${1:-}
    (($# > 0)) && shift
    case $command in
        up) with_lock cmd_up ;;
        down) with_lock cmd_down ;;
        status) cmd_status ;;
        env) print_env | sed 's/^/export /' ;;
        install) with_lock install_missing ;;
        start-kafka) with_lock start_kafka ;;
        stop-kafka) with_lock stop_kafka ;;
        start-mysql) with_lock start_mysql ;;
        stop-mysql) with_lock stop_mysql ;;
        topic-create)
            (($# == 2)) || usage
            topic_tool --create --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null
            ;;
        topic-delete)
            (($# == 1)) || usage
            topic_tool --delete --topic "$1"
            ;;
        topic-list) topic_tool --list ;;
        delete-records)
            (($# == 3)) || usage
            delete_records "$@"
            ;;
        group-offsets)
            (($# == 1)) || usage
            group_offsets "$1"
            ;;
        log-end-offsets)
            (($# == 1)) || usage
            offsets_at "$1" -1
            ;;
        log-start-offsets)
            (($# == 1)) || usage
            offsets_at "$1" -2
            ;;
        mysql)
            [[ -S $MYSQL_SOCKET ]] || die "mariadb is not running; start it with scripts/services.sh up"
            mariadb_root --database="$MYSQL_DATABASE" "$@"
            ;;
        *) usage ;;
    esac
}

main "$@"
