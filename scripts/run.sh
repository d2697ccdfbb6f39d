#!/usr/bin/env bash
# Starts, stops and watches one kafka2mysql service (DESIGN.md section 7).
#
#   scripts/run.sh start|stop|restart|status|check [--config FILE]
#
# start    starts the service in the background unless it already runs (exit 0
#          either way; 1 when it died at start, 2 when its setup is wrong).
#          Meant to be run by cron every minute: overlapping runs start one
#          process.
# stop     SIGTERM, wait for the graceful stop, then SIGKILL (exit 0).
# restart  stop, then start.
# status   exit 0 and print pid and uptime when it runs; exit 3 otherwise.
# check    `kafka2mysql check` with the same environment as start (env file):
#          config, broker, database and table are fine (0) or not (2).
#
# The default config is conf/kafka2mysql.toml of the tree this script lives in
# (the repository, or an installed PREFIX with bin/ conf/ scripts/ logs/ run/).
# For a config <dir>/<stem>.toml the service keeps its pid and status files in
# <dir>/../run/<stem>.pid and .status.json (the binary derives them the same
# way), and this script appends the service's stdout and stderr to
# <dir>/../logs/<stem>.out; the service's own log goes to log.file.
#
# Environment: before starting, the optional file <dir>/<stem>.env (for the
# default config: conf/kafka2mysql.env) is read, so that cron, which passes
# almost no environment, can supply MYSQL_PASSWORD. Its lines are KEY=VALUE,
# taken literally (not evaluated by the shell), with # comments and blank
# lines allowed; it must not be readable by group or others. KAFKA2MYSQL_BIN
# overrides the binary.
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SCRIPT_PATH")/.." && pwd -P)

# How long `start` watches a new process before calling it started.
START_WAIT_SECONDS=${KAFKA2MYSQL_START_WAIT_SECONDS:-5}
# How long start/stop wait for another run.sh working on the same config.
CONTROL_LOCK_WAIT_SECONDS=120
# What stop waits beyond worker.shutdown_timeout_ms before SIGKILL.
STOP_GRACE_SECONDS=10

NAME=kafka2mysql # replaced by the config's stem once known

say() { printf '%s %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$NAME" "$*"; }
fail() {
    local code=$1
    shift
    say "error: $*" >&2
    exit "$code"
}

usage() {
    echo "usage: $(basename "$0") start|stop|restart|status|check [--config FILE]" >&2
    exit 2
}

# ---------------------------------------------------------------- set-up

find_binary() {
    if [[ -n ${KAFKA2MYSQL_BIN:-} ]]; then
        [[ -x $KAFKA2MYSQL_BIN ]] || fail 2 "KAFKA2MYSQL_BIN=$KAFKA2MYSQL_BIN is not an executable file"
        BIN=$KAFKA2MYSQL_BIN
        return
    fi
    local candidate
    for candidate in "$ROOT/bin/kafka2mysql" "$ROOT/target/release/kafka2mysql" "$ROOT/target/debug/kafka2mysql"; do
        if [[ -x $candidate ]]; then
            BIN=$candidate
            return
        fi
    done
    fail 2 "no kafka2mysql binary in $ROOT/bin or $ROOT/target/{release,debug}; build it (cargo build --release) or set KAFKA2MYSQL_BIN"
}

# Sets CONFIG (absolute, symlinks resolved, as the binary canonicalises it)
# and the paths derived from it.
resolve_paths() {
    local given=$1
    [[ -f $given ]] || fail 2 "config file $given does not exist"
    CONFIG=$(readlink -f "$given")
    local config_dir base
    config_dir=$(dirname "$CONFIG")
    base=$(basename "$CONFIG")
    # Rust's Path::file_stem: the name without its last extension.
    STEM=${base%.*}
    [[ -n $STEM ]] || STEM=$base
    NAME=$STEM
    RUN_DIR=$(dirname "$config_dir")/run
    LOG_DIR=$(dirname "$config_dir")/logs
    PID_FILE=$RUN_DIR/$STEM.pid
    STATUS_FILE=$RUN_DIR/$STEM.status.json
    CONTROL_LOCK=$RUN_DIR/$STEM.run-sh.lock
    OUT_FILE=$LOG_DIR/$STEM.out
    ENV_FILE=$config_dir/$STEM.env
}

# Exports the KEY=VALUE lines of the env file, if there is one. The values are
# never printed.
load_env_file() {
    [[ -e $ENV_FILE ]] || return 0
    [[ -f $ENV_FILE && -r $ENV_FILE ]] || fail 2 "env file $ENV_FILE is not a readable file"
    local mode
    mode=$(stat -c '%a' "$ENV_FILE")
    if (((8#$mode & 8#077) != 0)); then
        fail 2 "env file $ENV_FILE is readable or writable by group or others (mode $mode); it may hold the database password: chmod 600 $ENV_FILE"
    fi
    local line key value number=0
    while IFS= read -r line || [[ -n $line ]]; do
        number=$((number + 1))
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] \
            || fail 2 "env file $ENV_FILE line $number: expected KEY=VALUE"
        key=${BASH_REMATCH[2]}
        value=${BASH_REMATCH[3]}
        # One pair of surrounding quotes is removed; nothing else is interpreted.
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        export "$key=$value"
    done <"$ENV_FILE"
}

# worker.shutdown_timeout_ms from the config (first match; good enough for the
# flat TOML the service reads), else the default of 30000.
shutdown_timeout_seconds() {
    local ms
    ms=$(sed -n 's/^[[:space:]]*shutdown_timeout_ms[[:space:]]*=[[:space:]]*\([0-9_]*\).*/\1/p' "$CONFIG" | head -n1)
    ms=${ms//_/}
    [[ -n $ms ]] || ms=30000
    echo $(((ms + 999) / 1000))
}

# Serialises start, stop and restart of one config: three overlapping cron
# runs decide one after the other, so exactly one of them starts a process.
take_control_lock() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    exec {CONTROL_FD}>>"$CONTROL_LOCK"
    flock -w "$CONTROL_LOCK_WAIT_SECONDS" "$CONTROL_FD" \
        || fail 1 "another run.sh has been holding $CONTROL_LOCK for ${CONTROL_LOCK_WAIT_SECONDS}s; try again later"
}

# ---------------------------------------------------------------- liveness

# True while some process holds the flock on the pid file. Probes with a
# shared lock on a descriptor opened read-only, so that the probe never
# creates the file.
pid_file_locked() {
    local fd free=0
    exec {fd}<"$PID_FILE" || return 1
    # Getting the lock means nobody holds it; closing the descriptor drops it.
    flock -n -s "$fd" && free=1
    exec {fd}<&-
    ((free == 0))
}

# True while the process exists and is not a zombie: a service whose starter
# has exited is reaped by init, which may take a moment, and kill -0 succeeds
# on a zombie.
pid_alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    [[ ${state%% *} != Z ]]
}

# Prints the pid of the running service and returns 0, or returns 1. A pid
# file counts only when its pid lives and its flock is held: a stale file left
# by a killed process, or a recycled pid, is not trusted. The lock is probed
# last, only when the pid lives, so that a probe never makes a starting
# service find its pid file locked.
running_pid() {
    local pid _
    for _ in 1 2 3 4 5; do
        [[ -e $PID_FILE ]] || return 1
        pid=$(head -c 32 "$PID_FILE" 2>/dev/null | tr -dc '0-9' || true)
        # The service writes its pid right after taking the lock.
        if [[ -z $pid ]]; then
            sleep 0.1
            continue
        fi
        pid_alive "$pid" || return 1
        pid_file_locked 2>/dev/null || return 1
        echo "$pid"
        return 0
    done
    return 1
}

# Seconds since the process started, from /proc, for machines without ps:
# field 22 of /proc/PID/stat is the start time in clock ticks after boot.
elapsed_seconds_from_proc() {
    local stat fields uptime ticks
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -ra fields <<<"${stat##*) }"
    read -r uptime _ </proc/uptime
    ticks=$(getconf CLK_TCK 2>/dev/null || echo 100)
    echo $((${uptime%.*} - fields[19] / ticks))
}

format_duration() {
    local s=$1
    if ((s >= 86400)); then
        printf '%dd%02dh%02dm' $((s / 86400)) $((s % 86400 / 3600)) $((s % 3600 / 60))
    elif ((s >= 3600)); then
        printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
    elif ((s >= 60)); then
        printf '%dm%02ds' $((s / 60)) $((s % 60))
    else
        printf '%ds' "$s"
    fi
}

# ---------------------------------------------------------------- commands

# Starts the service; the caller holds the control lock.
do_start() {
    local pid
    if pid=$(running_pid); then
        say "already running (pid $pid)"
        return 0
    fi
    find_binary
    load_env_file
    local password_hint=""
    if [[ -z ${MYSQL_PASSWORD:-} ]] && ! grep -Eq '^[[:space:]]*password_file[[:space:]]*=[[:space:]]*"[^"]+"' "$CONFIG"; then
        password_hint="MYSQL_PASSWORD is not set and the config names no mysql.password_file; put MYSQL_PASSWORD=... in $ENV_FILE (mode 600)"
    fi
    local out_start=0
    [[ -f $OUT_FILE ]] && out_start=$(stat -c %s "$OUT_FILE")
    printf '%s run.sh: starting %s run --config %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$BIN" "$CONFIG" >>"$OUT_FILE"
    # setsid: its own session, so no terminal hangup or Ctrl-C reaches it.
    # nohup: SIGHUP is ignored until the service installs its own handler
    # (logrotate's SIGHUP then reopens the log). The control lock's descriptor
    # is closed, or the service would hold it for its whole life.
    # A background subshell is not a process-group leader, so setsid does not
    # fork and $! is the service's pid.
    (
        cd "$ROOT"
        exec {CONTROL_FD}>&-
        exec setsid nohup "$BIN" run --config "$CONFIG" </dev/null >>"$OUT_FILE" 2>&1
    ) &
    local child=$!
    local deadline=$((SECONDS + START_WAIT_SECONDS)) rc
    while :; do
        if ! kill -0 "$child" 2>/dev/null; then
            rc=0
            wait "$child" || rc=$?
            local output
            output=$(tail -c +$((out_start + 1)) "$OUT_FILE" | tail -n 20)
            say "kafka2mysql exited during start with code $rc; last lines of $OUT_FILE:" >&2
            printf '%s\n' "$output" | sed 's/^/    /' >&2
            if [[ -n $password_hint && $output == *"Access denied"* ]]; then
                say "hint: $password_hint" >&2
            fi
            if ((rc == 2)); then
                say "the config or the setup is wrong (exit code 2); fix it, then run: $SCRIPT_PATH start --config $CONFIG" >&2
                exit 2
            fi
            exit 1
        fi
        # The coordinator writes the status file (with its pid) once the
        # broker and the database answered and the workers run.
        if [[ -f $STATUS_FILE ]] && grep -Eq "\"pid\": *$child," "$STATUS_FILE" 2>/dev/null; then
            say "started (pid $child)"
            break
        fi
        if ((SECONDS >= deadline)); then
            # The service writes its pid only once it holds the lock.
            if [[ $(head -c 32 "$PID_FILE" 2>/dev/null | tr -dc '0-9' || true) == "$child" ]]; then
                say "started (pid $child); still connecting to Kafka or MySQL, see ${LOG_DIR}/ and $SCRIPT_PATH status"
            else
                say "started (pid $child), but it holds no lock on $PID_FILE yet; see $OUT_FILE" >&2
            fi
            break
        fi
        sleep 0.1
    done
    disown "$child" 2>/dev/null || true
    return 0
}

# Stops the service; the caller holds the control lock.
do_stop() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        return 0
    fi
    local timeout=$(($(shutdown_timeout_seconds) + STOP_GRACE_SECONDS))
    say "stopping (pid $pid, SIGTERM; SIGKILL after ${timeout}s)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            say "pid $pid did not stop within ${timeout}s; sending SIGKILL (its uncommitted records will be applied again)" >&2
            kill -KILL "$pid" 2>/dev/null || true
            local kill_deadline=$((SECONDS + 10))
            while pid_alive "$pid"; do
                ((SECONDS < kill_deadline)) || fail 1 "pid $pid survived SIGKILL for 10s"
                sleep 0.1
            done
            # SIGKILL leaves the pid file behind; nobody holds its lock now.
            rm -f "$PID_FILE"
            break
        fi
        sleep 0.2
    done
    say "stopped (pid $pid)"
}

do_status() {
    local pid
    if pid=$(running_pid); then
        local etimes
        etimes=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -dc '0-9' || true)
        [[ -n $etimes ]] || etimes=$(elapsed_seconds_from_proc "$pid")
        say "running (pid $pid, up $(format_duration "${etimes:-0}"))"
        return 0
    fi
    say "not running"
    return 3
}

main() {
    (($# >= 1)) || usage
    local command=$1
    shift
    local config="$ROOT/conf/kafka2mysql.toml"
    while (($# > 0)); do
        case $1 in
            --config)
                (($# >= 2)) || usage
                config=$2
                shift 2
                ;;
            --config=*)
                config=${1#--config=}
                shift
                ;;
            *) usage ;;
        esac
    done
    case $command in
        start | stop | restart | status | check) ;;
        *) usage ;;
    esac
    resolve_paths "$config"
    case $command in
        start)
            take_control_lock
            do_start
            ;;
        stop)
            take_control_lock
            do_stop
            ;;
        restart)
            take_control_lock
            do_stop
            do_start
            ;;
        check)
            find_binary
            load_env_file
            exec "$BIN" check --config "$CONFIG"
            ;;
        status)
            local rc=0
            do_status || rc=$?
            exit $rc
            ;;
    esac
}

main "$@"
