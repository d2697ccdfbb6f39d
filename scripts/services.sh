#!/usr/bin/env bash
# Real Kafka and MariaDB for the demo and the tests.
#
#   scripts/services.sh up | down | status | env | install
#   scripts/services.sh stop-kafka | start-kafka | kill-kafka | freeze-kafka | thaw-kafka
#   scripts/services.sh stop-mysql | start-mysql | freeze-mysql | thaw-mysql
#   scripts/services.sh topic-create NAME PARTITIONS [KEY=VALUE ...] | topic-delete NAME | topic-list
#   scripts/services.sh topic-alter-partitions NAME PARTITIONS
#   scripts/services.sh delete-records TOPIC PARTITION OFFSET
#   scripts/services.sh group-offsets GROUP
#   scripts/services.sh log-end-offsets TOPIC | log-start-offsets TOPIC
#   scripts/services.sh mysql [mariadb client args]
#   scripts/services.sh ports-lock | locked COMMAND [ARGS...]
#
# Apache Kafka runs as a single KRaft node (broker and controller in one JVM)
# from jars that Maven resolves from Maven Central; MariaDB runs from the
# Debian package with its own data directory. Both listen on loopback ports
# that do not clash with system services, and keep everything they write under
# $REPO/.services (ignored by git), so removing that directory resets them.
#
# KAFKA_VERSION picks the broker: unset or 4.4.0 is Kafka 4.4.0
# (scripts/kafka-pom.xml), 3.9.1 is Kafka 3.9.1 (scripts/kafka-pom-3.9.xml), the
# last one that still serves the old protocol versions the kafka crate speaks.
# Each has its own jars (.services/kafka-libs-VERSION) and data
# (.services/kafka-VERSION), and both use the same ports: starting one stops
# the other. The commands that do not start one (env, status, the topic and
# offset tools, stop-kafka, kill-kafka, freeze-kafka, thaw-kafka) act on the
# broker of this checkout that runs, whatever its version.
#
# The broker has two client listeners: PLAINTEXT on 127.0.0.1:19092 (the tools
# use it) and SASL_SSL on 127.0.0.1:19094, with a certificate from a CA made at
# the first start (KAFKA_SSL_CA) and the user k2m for PLAIN, SCRAM-SHA-256 and
# SCRAM-SHA-512. `up` and `env` print the addresses, the CA and the throwaway
# test passwords as KEY=VALUE lines, and nothing else on standard output.
#
# Every lifecycle command is idempotent and serialised by a lock; the tool
# commands only talk to the running services and may run in parallel.
#
# `up` stops another checkout's broker or server on its ports. So that it does
# not pull the services out from under a run of that checkout, the scripts
# that use the services for a while (test.sh, demo.sh, bench.sh) run under
# `flock -o` on the machine-wide file that `ports-lock` names, one per pair of
# ports: a second run waits for the first, and no service started meanwhile
# inherits (and so keeps) the lock. `locked COMMAND` runs the command so, with
# K2M_PORTS_LOCKED=1 in its environment: each of those scripts starts itself
# again that way unless the variable is set.
#
# A second instance beside the usual one (for developing this script) takes
# K2M_SERVICES_DIR (default $REPO/.services), KAFKA_PORT (19092),
# KAFKA_CONTROLLER_PORT (19093), KAFKA_SASL_PORT (19094) and MYSQL_PORT (13306).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${K2M_SERVICES_DIR:-$REPO/.services}"
[[ $SERVICES_DIR == /* ]] || SERVICES_DIR="$PWD/$SERVICES_DIR"
SERVICES_DIR=${SERVICES_DIR%/}
MARIADB_DIR="$SERVICES_DIR/mariadb"

KAFKA_VERSIONS=(4.4.0 3.9.1)
KAFKA_DEFAULT_VERSION=4.4.0
# What the caller asked for; select_kafka_version sets KAFKA_VERSION, KAFKA_DIR
# and KAFKA_LIBS from it.
REQUESTED_KAFKA_VERSION=${KAFKA_VERSION:-}
KAFKA_VERSION="" KAFKA_DIR="" KAFKA_LIBS=""

KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-19094}
KAFKA_BROKERS="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_SASL_BROKERS="$KAFKA_HOST:$KAFKA_SASL_PORT"
KAFKA_SASL_USER=k2m
# Throwaway passwords of a broker that only listens on loopback.
KAFKA_SASL_TEST_PASSWORD=k2m-sasl-test-password
KAFKA_KEYSTORE_PASSWORD=k2m-keystore-test-password

MYSQL_HOST=127.0.0.1
MYSQL_PORT=${MYSQL_PORT:-13306}
MYSQL_DATABASE=kafka2mysql
MYSQL_USER=k2m
# A throwaway password for a database that only listens on loopback.
MYSQL_TEST_PASSWORD=k2m-test-password
MYSQL_URL="mysql://$MYSQL_USER@$MYSQL_HOST:$MYSQL_PORT/$MYSQL_DATABASE"
MYSQL_SOCKET="$MARIADB_DIR/mysqld.sock"

START_DEADLINE_SECONDS=90
STOP_DEADLINE_SECONDS=60

# The first line of every config file this script writes: how a broker or
# server of another checkout is told from someone else's.
CONFIG_HEADER="# Written by scripts/services.sh; edits are overwritten."

# The command-line tools start a JVM each time and the tests call them often:
# keep them small and quick to start (C1 only, serial GC, class data sharing).
TOOL_JAVA_OPTS=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto)

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- versions

kafka_pom() {
    case $1 in
        4.4.0) echo "$REPO/scripts/kafka-pom.xml" ;;
        3.9.1) echo "$REPO/scripts/kafka-pom-3.9.xml" ;;
        *) die "KAFKA_VERSION=$1 is not supported (${KAFKA_VERSIONS[*]})" ;;
    esac
}

# Sets KAFKA_VERSION, KAFKA_DIR and KAFKA_LIBS. `start`: the requested
# version, else the default. `running`: the version of the broker of this
# checkout that runs, else the requested one, else the default.
select_kafka_version() {
    local mode=$1 version="" pid dir
    if [[ $mode == running ]]; then
        read -r pid version dir < <(checkout_kafka) || true
        if [[ $version == legacy ]]; then
            # A 3.9.1 broker started by an earlier version of this script,
            # from .services/kafka and .services/kafka-libs: its tools work.
            KAFKA_VERSION=3.9.1 KAFKA_DIR=$dir KAFKA_LIBS="$SERVICES_DIR/kafka-libs"
            return 0
        fi
        if [[ -n $version && -n $REQUESTED_KAFKA_VERSION && $version != "$REQUESTED_KAFKA_VERSION" ]]; then
            log "KAFKA_VERSION=$REQUESTED_KAFKA_VERSION, but Kafka $version runs: using $version"
        fi
    fi
    version=${version:-${REQUESTED_KAFKA_VERSION:-$KAFKA_DEFAULT_VERSION}}
    kafka_pom "$version" >/dev/null
    KAFKA_VERSION=$version
    KAFKA_DIR="$SERVICES_DIR/kafka-$version"
    KAFKA_LIBS="$SERVICES_DIR/kafka-libs-$version"
}

# ---------------------------------------------------------------- install

# Installs the Debian packages and tools that are missing, and the packages
# given as arguments, running `apt-get update` once first and only when
# something is missing.
install_packages() {
    local missing=("$@")
    command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]}"
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

# Resolves the jars of Kafka $1 into .services/kafka-libs-$1 unless they are
# there. Maven caches what it downloads (~/.m2); the jars land in a scratch
# directory that is renamed at the end, so an interrupted run leaves nothing
# that looks complete.
install_kafka_jars() {
    local version=$1 libs="$SERVICES_DIR/kafka-libs-$1" pom scratch
    [[ -f "$libs/kafka_2.13-$version.jar" ]] && return 0
    pom=$(kafka_pom "$version")
    log "resolving Apache Kafka $version jars from Maven Central into $libs"
    mkdir -p "$SERVICES_DIR"
    rm -rf "$libs".partial.*
    scratch=$(mktemp -d "$libs.partial.XXXXXX")
    # Batch mode: no progress bars and no colours. Maven still writes terminal
    # escape codes to standard output, which carries only KEY=VALUE lines here:
    # all of its output goes to standard error. outputDirectory must be
    # absolute: Maven resolves a relative one against the pom's directory.
    if ! mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$scratch" -DincludeScope=runtime >&2; then
        rm -rf "$scratch"
        die "maven could not resolve the Kafka $version jars (${pom#"$REPO/"})"
    fi
    [[ -f "$scratch/kafka_2.13-$version.jar" ]] || { rm -rf "$scratch"; die "kafka_2.13-$version.jar missing after mvn (${pom#"$REPO/"})"; }
    rm -rf "$libs"
    mv "$scratch" "$libs"
}

install_missing() {
    install_packages
    install_kafka_jars "$KAFKA_VERSION"
}

# What the tests need besides the services: promtool (Debian's prometheus
# package) checks the metrics endpoint's output and conf/kafka2mysql-alerts.yml.
install_all() {
    local test_tools=()
    command -v promtool >/dev/null 2>&1 || test_tools+=(prometheus)
    install_packages "${test_tools[@]}"
    local version
    for version in "${KAFKA_VERSIONS[@]}"; do
        install_kafka_jars "$version"
    done
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

# Prints `PID CONFIG` for every Kafka broker JVM on this machine: a java
# process whose main class is kafka.Kafka, CONFIG being its properties file.
kafka_brokers() {
    local pid args i
    for pid in $(pids_matching kafka.Kafka); do
        mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
        [[ ${args[0]:-} == java || ${args[0]:-} == */java ]] || continue
        for ((i = 1; i + 1 < ${#args[@]}; i++)); do
            if [[ ${args[i]} == kafka.Kafka ]]; then
                echo "$pid ${args[i + 1]}"
                break
            fi
        done
    done
}

# Prints `PID VERSION DIR` for the brokers of this checkout, whatever their
# version; VERSION is `legacy` for .services/kafka, where an earlier version of
# this script kept its 3.9.1 broker.
checkout_kafka() {
    local pid config dir version
    while read -r pid config; do
        dir=${config%/server.properties}
        [[ $dir != "$config" && ${dir%/*} == "$SERVICES_DIR" ]] || continue
        case ${dir##*/} in
            kafka) version=legacy ;;
            kafka-*) version=${dir##*/kafka-} ;;
            *) continue ;;
        esac
        echo "$pid $version $dir"
    done < <(kafka_brokers)
}

checkout_kafka_pids() { checkout_kafka | awk '{ print $1 }'; }
kafka_pids() { checkout_kafka | awk -v dir="$KAFKA_DIR" '$3 == dir { print $1 }'; }
mariadb_pids() { pids_matching mariadbd "--defaults-file=$MARIADB_DIR/my.cnf"; }

# True when FILE was written by this script (of any checkout) and LINE_REGEX
# matches one of its lines.
our_config_says() {
    local file=$1 regex=$2 line first
    [[ -r $file ]] || return 1
    { IFS= read -r first && [[ $first == "$CONFIG_HEADER" ]]; } <"$file" || return 1
    while IFS= read -r line; do
        [[ $line =~ $regex ]] && return 0
    done <"$file"
    return 1
}

# A broker or server that another checkout (or another services directory) of
# this project started and that listens on one of our ports must go, or ours
# could not start. One on other ports is left alone.
foreign_kafka_pids() {
    local pid config port
    while read -r pid config; do
        [[ ${config%/server.properties} == "$SERVICES_DIR"/kafka* ]] && continue
        for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT"; do
            if our_config_says "$config" "^listeners=(.*,)?[A-Z_]+://[^,]*:$port(,|$)"; then
                echo "$pid"
                break
            fi
        done
    done < <(kafka_brokers)
}
foreign_mariadb_pids() {
    local pid args arg
    for pid in $(pids_matching mariadbd --defaults-file=); do
        mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
        for arg in "${args[@]}"; do
            [[ $arg == --defaults-file=* ]] || continue
            arg=${arg#--defaults-file=}
            [[ $arg == "$MARIADB_DIR/my.cnf" ]] && break
            our_config_says "$arg" "^port=$MYSQL_PORT\$" && echo "$pid"
            break
        done
    done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# True while the process exists and is not a zombie.
alive() {
    local stat
    { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Sends SIGTERM (and SIGCONT, for a frozen broker), waits up to the deadline,
# then SIGKILL.
terminate() {
    local name=$1
    shift
    local pids=("$@") pid deadline
    ((${#pids[@]} > 0)) || return 0
    log "stopping $name (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    kill -CONT "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + STOP_DEADLINE_SECONDS))
    for pid in "${pids[@]}"; do
        while alive "$pid"; do
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

# Writes standard input to FILE unless FILE already has exactly that content;
# true when it wrote.
write_if_changed() {
    local file=$1 content old=""
    content=$(cat)
    [[ -f $file ]] && old=$(<"$file")
    [[ $content == "$old" ]] && return 1
    printf '%s\n' "$content" >"$file.tmp"
    mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------- kafka

kafka_major() { echo "${KAFKA_VERSION%%.*}"; }

java_tool() {
    local class=$1
    shift
    local logging
    if (($(kafka_major) >= 4)); then
        logging=-Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties"
    else
        logging=-Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties"
    fi
    java "${TOOL_JAVA_OPTS[@]}" "$logging" -cp "$KAFKA_LIBS/*" "$class" "$@"
}

# The tools that moved from the Scala core (kafka.admin) to kafka-tools in 4.0.
config_command_class() {
    (($(kafka_major) >= 4)) && echo org.apache.kafka.tools.ConfigCommand || echo kafka.admin.ConfigCommand
}
broker_api_versions_class() {
    (($(kafka_major) >= 4)) && echo org.apache.kafka.tools.BrokerApiVersionsCommand || echo kafka.admin.BrokerApiVersionsCommand
}

# Writes the broker's configuration, its logging configuration and the tools'
# files; true when server.properties changed (a running broker must restart).
write_kafka_config() {
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    local version_specific status=1
    if (($(kafka_major) >= 4)); then
        version_specific="# Share groups (4.x): their state topic on this one node.
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1"
    else
        version_specific="# The kafka crate fetches with protocol v0: the broker converts record batches
# down to message format v0 for it (4.0 removed both).
log.message.downconversion.enable=true"
    fi
    write_if_changed "$KAFKA_DIR/server.properties" <<EOF && status=0
$CONFIG_HEADER
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
# SASL_SSL: a certificate for 127.0.0.1 and localhost from the CA in tls/, and
# the user $KAFKA_SASL_USER for PLAIN (here) and SCRAM (in the cluster metadata).
ssl.keystore.type=PKCS12
ssl.keystore.location=$KAFKA_DIR/tls/broker.p12
ssl.keystore.password=$KAFKA_KEYSTORE_PASSWORD
ssl.key.password=$KAFKA_KEYSTORE_PASSWORD
ssl.client.auth=none
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_TEST_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
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
# The offsets of a group without members expire a minute after their last
# commit, looked for every 5 s (Kafka's defaults: 7 days, every 10 minutes),
# so that a test can show that the service keeps them.
offsets.retention.minutes=1
offsets.retention.check.interval.ms=5000
# Compaction and deletion that tests can wait for: the cleaner looks for work
# every second, deleted segments go after a second, the periodic log tasks
# start a second after start-up, and the cleaner's buffer fits a small heap.
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=33554432
log.segment.delete.delay.ms=1000
log.initial.task.delay.ms=1000
$version_specific
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    if (($(kafka_major) >= 4)); then
        # Kafka 4 logs through log4j2. `dest = err`: log4j2's own messages
        # must not reach a tool's standard output, which is parsed.
        write_if_changed "$KAFKA_DIR/log4j2.properties" <<EOF || true
status = warn
dest = err
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $KAFKA_DIR/logs/server.log
appender.file.filePattern = $KAFKA_DIR/logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
        write_if_changed "$KAFKA_DIR/tools-log4j2.properties" <<EOF || true
status = error
dest = err
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ERROR
rootLogger.appenderRef.stderr.ref = stderr
EOF
    else
        write_if_changed "$KAFKA_DIR/log4j.properties" <<EOF || true
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
        write_if_changed "$KAFKA_DIR/tools-log4j.properties" <<EOF || true
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
    fi
    # The tools fail within seconds instead of retrying for a minute when the
    # broker is down (a test that stops it must not hang on a tool).
    write_if_changed "$KAFKA_DIR/tools.properties" <<EOF || true
request.timeout.ms=10000
default.api.timeout.ms=20000
EOF
    return $status
}

# A CA and a broker certificate signed by it, made once per data directory:
# tls/ca.pem is what a client trusts (KAFKA_SSL_CA), tls/broker.p12 the
# broker's key and certificate chain. The certificate names 127.0.0.1 and
# localhost, which clients that check the host name (librdkafka's default)
# accept.
ensure_tls() {
    local tls="$KAFKA_DIR/tls" scratch
    [[ -f $tls/ca.pem && -f $tls/broker.p12 ]] && return 0
    log "making a test CA and a broker certificate in $tls"
    mkdir -p "$KAFKA_DIR"
    rm -rf "$tls".partial.*
    scratch=$(mktemp -d "$tls.partial.XXXXXX")
    if ! (
        cd "$scratch"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/CN=kafka2mysql test CA" -keyout ca.key -out ca.pem
        openssl req -new -newkey rsa:2048 -nodes -sha256 \
            -subj "/CN=localhost" -keyout broker.key -out broker.csr
        printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
            'keyUsage=critical,digitalSignature,keyEncipherment' \
            'extendedKeyUsage=serverAuth' \
            'subjectAltName=IP:127.0.0.1,DNS:localhost' >broker.ext
        openssl x509 -req -sha256 -days 3650 -in broker.csr -CA ca.pem -CAkey ca.key \
            -CAcreateserial -extfile broker.ext -out broker.pem
        openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
            -passout "pass:$KAFKA_KEYSTORE_PASSWORD" -out broker.p12
    ) >"$scratch/openssl.log" 2>&1; then
        cat "$scratch/openssl.log" >&2
        rm -rf "$scratch"
        die "openssl could not make the test certificates"
    fi
    rm -rf "$tls"
    mv "$scratch" "$tls"
}

# The SCRAM credentials of the SASL user live in the cluster metadata: they
# are added when the storage is formatted and, for a data directory formatted
# without them, through the running broker. The file remembers for which
# password.
scram_marker() { echo "$KAFKA_DIR/data/.kafka2mysql-scram-$KAFKA_SASL_USER"; }
scram_args() {
    local mechanism
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        echo "--add-scram"
        echo "$mechanism=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_TEST_PASSWORD]"
    done
}

ensure_scram_user() {
    local marker mechanism
    marker=$(scram_marker)
    [[ -f $marker && $(<"$marker") == "$KAFKA_SASL_TEST_PASSWORD" ]] && return 0
    # One mechanism per call: a KRaft controller refuses a request that
    # alters the same user twice ("A user credential cannot be altered twice").
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        log "adding the $mechanism user $KAFKA_SASL_USER"
        java_tool "$(config_command_class)" --bootstrap-server "$KAFKA_BROKERS" \
            --command-config "$KAFKA_DIR/tools.properties" --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
            --add-config "$mechanism=[password=$KAFKA_SASL_TEST_PASSWORD]" >&2 \
            || die "could not add the $mechanism user $KAFKA_SASL_USER"
    done
    printf '%s\n' "$KAFKA_SASL_TEST_PASSWORD" >"$marker"
}

kafka_answers() {
    if command -v kcat >/dev/null 2>&1; then
        kcat -b "$KAFKA_BROKERS" -L -m 3 2>/dev/null | grep -q "broker 1 at $KAFKA_BROKERS"
    else
        java_tool "$(broker_api_versions_class)" --bootstrap-server "$KAFKA_BROKERS" \
            --command-config "$KAFKA_DIR/tools.properties" 2>/dev/null | grep -q "$KAFKA_BROKERS"
    fi
}

# The SASL_SSL listener answers a metadata request from the user, over TLS
# with the CA's certificate. PLAIN: librdkafka before 2.6.1 (Debian 12's kcat
# has 2.0.2) fails SCRAM against a Kafka 4 broker, though the credentials are
# good (Java clients and newer librdkafka log in).
kafka_sasl_answers() {
    kcat -b "$KAFKA_SASL_BROKERS" -L -m 5 -X security.protocol=SASL_SSL \
        -X ssl.ca.location="$KAFKA_DIR/tls/ca.pem" -X sasl.mechanisms=PLAIN \
        -X sasl.username="$KAFKA_SASL_USER" -X sasl.password="$KAFKA_SASL_TEST_PASSWORD" \
        2>/dev/null | grep -q "broker 1 at $KAFKA_SASL_BROKERS"
}

# Waits until CHECK succeeds while the broker runs.
await_kafka() {
    local check=$1 what=$2 deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until $check; do
        if [[ -z $(kafka_pids) ]]; then
            tail_log "$KAFKA_DIR/kafka.out"
            tail_log "$KAFKA_DIR/logs/server.log"
            die "kafka exited during start; see $KAFKA_DIR/logs/server.log and $KAFKA_DIR/kafka.out"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$KAFKA_DIR/logs/server.log"
            die "kafka did not answer $what within ${START_DEADLINE_SECONDS}s; see $KAFKA_DIR/logs/server.log"
        fi
        sleep 0.5
    done
}

start_kafka() {
    install_missing
    local pids started=0 config_changed=0 other
    write_kafka_config && config_changed=1
    pids=$(kafka_pids)
    if [[ -n $pids ]] && ((config_changed)); then
        log "the configuration of Kafka $KAFKA_VERSION changed; restarting it"
        terminate "kafka $KAFKA_VERSION" $pids
        pids=""
    fi
    if [[ -n $pids ]]; then
        # A broker left frozen by freeze-kafka answers again.
        kill -CONT $pids 2>/dev/null || true
    else
        other=$(checkout_kafka_pids)
        if [[ -n $other ]]; then
            terminate "the Kafka broker of this checkout of another version" $other
            rm -f "$SERVICES_DIR"/kafka*/kafka.pid
        fi
        terminate "a Kafka broker of another checkout on our ports" $(foreign_kafka_pids)
        local port
        for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT"; do
            port_open "$KAFKA_HOST" "$port" && die "port $port is in use by another program; kafka cannot start"
        done
        ensure_tls
        if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
            local cluster_id scram=()
            cluster_id=$(java_tool kafka.tools.StorageTool random-uuid)
            mapfile -t scram < <(scram_args)
            log "formatting Kafka $KAFKA_VERSION storage in $KAFKA_DIR/data (cluster $cluster_id)"
            java_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
                "${scram[@]}" >"$KAFKA_DIR/format.log" 2>&1 \
                || { tail_log "$KAFKA_DIR/format.log"; die "kafka storage format failed; see $KAFKA_DIR/format.log"; }
            printf '%s\n' "$KAFKA_SASL_TEST_PASSWORD" >"$(scram_marker)"
        fi
        log "starting Kafka $KAFKA_VERSION on $KAFKA_BROKERS and $KAFKA_SASL_BROKERS (SASL_SSL) (log: $KAFKA_DIR/logs/server.log)"
        local logging
        if (($(kafka_major) >= 4)); then
            logging=-Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties"
        else
            logging=-Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties"
        fi
        (
            cd "$KAFKA_DIR"
            exec 9>&- # the daemon must not inherit (and so hold) the lock
            exec setsid nohup java -Xmx512m -Xms256m -XX:+UseG1GC -Djava.awt.headless=true "$logging" \
                -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
                </dev/null >>"$KAFKA_DIR/kafka.out" 2>&1
        ) &
        disown || true
        started=1
    fi
    await_kafka kafka_answers "a metadata request on $KAFKA_BROKERS"
    kafka_pids | head -n1 >"$KAFKA_DIR/kafka.pid"
    local marker
    marker=$(scram_marker)
    if ((started)) || [[ ! -f $marker || $(<"$marker") != "$KAFKA_SASL_TEST_PASSWORD" ]]; then
        ensure_scram_user
        command -v kcat >/dev/null 2>&1 && await_kafka kafka_sasl_answers "the user $KAFKA_SASL_USER on $KAFKA_SASL_BROKERS (SASL_SSL)"
    fi
    return 0
}

# Stops every broker of this checkout, whatever its version.
stop_kafka() {
    terminate kafka $(checkout_kafka_pids)
    rm -f "$SERVICES_DIR"/kafka*/kafka.pid
}

# SIGKILL: a broker that dies without shutting down; returns once it is gone.
kill_kafka() {
    local pids pid deadline=$((SECONDS + STOP_DEADLINE_SECONDS))
    pids=$(checkout_kafka_pids)
    [[ -n $pids ]] || return 0
    log "killing kafka (pid $(echo $pids))"
    kill -KILL $pids 2>/dev/null || true
    for pid in $pids; do
        while alive "$pid"; do
            ((SECONDS < deadline)) || die "kafka (pid $pid) is still there ${STOP_DEADLINE_SECONDS}s after SIGKILL"
            sleep 0.05
        done
    done
    rm -f "$SERVICES_DIR"/kafka*/kafka.pid
}

# SIGSTOP / SIGCONT: a broker that keeps its connections but stops answering.
signal_kafka() {
    local signal=$1 pids
    pids=$(checkout_kafka_pids)
    [[ -n $pids ]] || die "no Kafka broker of this checkout runs"
    kill "-$signal" $pids
}

# ---------------------------------------------------------------- mariadb

# SIGSTOP (freeze-mysql: the server holds its connections and answers
# nothing) or SIGCONT (thaw-mysql) to this checkout's MariaDB server.
signal_mysql() {
    local signal=$1 pids
    pids=$(mariadb_pids)
    [[ -n $pids ]] || die "no MariaDB server of this checkout runs"
    kill "-$signal" $pids
}

write_mariadb_config() {
    mkdir -p "$MARIADB_DIR/data" "$MARIADB_DIR/tmp"
    cat >"$MARIADB_DIR/my.cnf" <<EOF
$CONFIG_HEADER
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
    install_packages
    write_mariadb_config
    local pids
    pids=$(mariadb_pids)
    # A server left frozen by freeze-mysql answers again.
    [[ -z $pids ]] || kill -CONT $pids 2>/dev/null || true
    if [[ -z $pids ]]; then
        terminate "a MariaDB server of another checkout on our port" $(foreign_mariadb_pids)
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

# KEY=VALUE lines, the only thing `up` and `env` print on standard output.
print_env() {
    echo "KAFKA_VERSION=$KAFKA_VERSION"
    echo "KAFKA_BROKERS=$KAFKA_BROKERS"
    echo "KAFKA_SASL_BROKERS=$KAFKA_SASL_BROKERS"
    echo "KAFKA_SSL_CA=$KAFKA_DIR/tls/ca.pem"
    echo "KAFKA_SASL_USER=$KAFKA_SASL_USER"
    echo "KAFKA_SASL_TEST_PASSWORD=$KAFKA_SASL_TEST_PASSWORD"
    echo "MYSQL_URL=$MYSQL_URL"
    echo "MYSQL_PASSWORD=$MYSQL_TEST_PASSWORD"
}

# The same as shell commands, quoted for eval.
print_exports() {
    local key value
    while IFS='=' read -r key value; do
        printf 'export %s=%q\n' "$key" "$value"
    done < <(print_env)
}

# Runs a lifecycle command under the lock, so that two `up`s do not race.
with_lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 300 9 || die "another scripts/services.sh holds $SERVICES_DIR/.lock"
    "$@"
}

# Standard output carries the KEY=VALUE lines and nothing else: whatever
# starting the services prints (apt, mvn, the servers) goes to stderr.
cmd_up() {
    {
        start_mysql
        start_kafka
    } >&2
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
        local sasl=""
        our_config_says "$KAFKA_DIR/server.properties" "^listeners=.*SASL_SSL://" && sasl=" and $KAFKA_SASL_BROKERS (SASL_SSL)"
        echo "kafka $KAFKA_VERSION: up at $KAFKA_BROKERS$sasl (pid ${pids% })"
    else
        echo "kafka $KAFKA_VERSION: down${pids:+ (pid ${pids% } runs but does not answer)}; log $KAFKA_DIR/logs/server.log"
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
        || die "kafka $KAFKA_VERSION is not set up; start it with scripts/services.sh up"
}

topic_tool() {
    need_kafka_libs
    java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
        --command-config "$KAFKA_DIR/tools.properties" "$@"
}

# topic-create NAME PARTITIONS [KEY=VALUE ...]: the pairs are topic configs.
topic_create() {
    local topic=$1 partitions=$2 configs=() pair
    [[ $partitions =~ ^[0-9]+$ ]] || usage
    shift 2
    for pair in "$@"; do
        [[ $pair == ?*=* ]] || die "topic config '$pair' is not KEY=VALUE"
        configs+=(--config "$pair")
    done
    topic_tool --create --topic "$topic" --partitions "$partitions" --replication-factor 1 "${configs[@]}" >/dev/null
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
    # Kafka 3 says the first, Kafka 4 the second.
    if grep -qF -e "Consumer group '$group' does not exist" -e "GroupIdNotFoundException: Group $group not found" <<<"$output"; then
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

ports_lock() {
    printf '%s\n' "${TMPDIR:-/tmp}/kafka2mysql-services-kafka$KAFKA_PORT-mysql$MYSQL_PORT.lock"
}

# run_locked COMMAND [ARGS...]: runs the command under flock(1) on the ports
# lock, which holds it and passes it to no child (-o), so that the services
# the command starts do not keep it; says so when it has to wait.
run_locked() {
    local lock
    lock=$(ports_lock)
    flock -n -o "$lock" true \
        || log "${1##*/}: another test, demo or bench run uses these ports; waiting for it to end"
    # The command sees KAFKA_VERSION as its caller set it (this script
    # clears it above until it picks a broker).
    if [[ -n $REQUESTED_KAFKA_VERSION ]]; then
        export KAFKA_VERSION=$REQUESTED_KAFKA_VERSION
    else
        unset KAFKA_VERSION
    fi
    K2M_PORTS_LOCKED=1 exec flock -o -w 3600 "$lock" "$@"
}

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local command=${1:-}
    (($# > 0)) && shift
    case $command in
        up | start-kafka) select_kafka_version start ;;
        install | mysql | start-mysql | stop-mysql | freeze-mysql | thaw-mysql | ports-lock | locked) ;;
        *) select_kafka_version running ;;
    esac
    case $command in
        up) with_lock cmd_up ;;
        down) with_lock cmd_down ;;
        status) cmd_status ;;
        env) print_exports ;;
        ports-lock) ports_lock ;;
        locked)
            (($# >= 1)) || usage
            run_locked "$@"
            ;;
        install) with_lock install_all >&2 ;;
        start-kafka) with_lock start_kafka ;;
        stop-kafka) with_lock stop_kafka ;;
        kill-kafka) with_lock kill_kafka ;;
        freeze-kafka) signal_kafka STOP ;;
        thaw-kafka) signal_kafka CONT ;;
        start-mysql) with_lock start_mysql ;;
        stop-mysql) with_lock stop_mysql ;;
        freeze-mysql) signal_mysql STOP ;;
        thaw-mysql) signal_mysql CONT ;;
        topic-create)
            (($# >= 2)) || usage
            topic_create "$@"
            ;;
        topic-alter-partitions)
            (($# == 2)) && [[ $2 =~ ^[0-9]+$ ]] || usage
            topic_tool --alter --topic "$1" --partitions "$2" >/dev/null
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
