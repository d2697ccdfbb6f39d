#!/usr/bin/env bash
# Starts, stops and watches one kafka2mysql service, from cron or by hand.
# The binary does the work (its pid lock, its stop, its status); this script
# only reads the environment file and starts the service in the background.
#
#   scripts/run.sh start|stop|restart|status|check [--config FILE]
#
# start    starts `kafka2mysql run` in the background unless it already runs
#          (exit 0 either way; 1 when it died at start, 2 when its setup is
#          wrong). Meant for cron every minute: overlapping starts leave one
#          process (the binary's pid lock decides).
# stop     `kafka2mysql stop`: SIGTERM, then SIGKILL after
#          worker.shutdown_timeout_ms plus 5 s (exit 0).
# restart  stop, then start.
# status   `kafka2mysql status`: 0 every partition flowing, 1 something
#          retrying, blocked or unreachable, 3 not running.
# check    `kafka2mysql check`: config, broker, database and table are fine
#          (0) or not (2).
#
# The default config is conf/kafka2mysql.toml of the tree this script lives in
# (the repository, or an installed PREFIX with bin/ conf/ scripts/ logs/ run/).
# The service's stdout and stderr go to <config dir>/../logs/<stem>.out; its
# own log goes to log.file.
#
# Environment: the optional file <config dir>/<stem>.env (for the default
# config: conf/kafka2mysql.env) is read first, so that cron, which passes
# almost no environment, can supply MYSQL_PASSWORD. Its lines are KEY=VALUE,
# taken literally (not evaluated by the shell), with # comments and blank
# lines allowed; it must not be readable by group or others. KAFKA2MYSQL_BIN
# overrides the binary.
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SCRIPT_PATH")/.." && pwd -P)

# How long `start` watches a new process before calling it started.
START_WAIT_SECONDS=${KAFKA2MYSQL_START_WAIT_SECONDS:-5}

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

do_start() {
    if "$BIN" status --local --config "$CONFIG" >/dev/null 2>&1; [[ $? != 3 ]]; then
        say "already running"
        return 0
    fi
    mkdir -p "$(dirname "$OUT_FILE")"
    local out_start=0
    [[ -f $OUT_FILE ]] && out_start=$(stat -c %s "$OUT_FILE")
    printf '%s run.sh: starting %s run --config %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$BIN" "$CONFIG" >>"$OUT_FILE"
    # setsid: its own session, so no terminal hangup or Ctrl-C reaches it.
    # nohup: SIGHUP is ignored until the service installs its own handler
    # (logrotate's SIGHUP then reopens the log). A background subshell is not
    # a process-group leader, so setsid does not fork and $! is the service.
    (
        cd "$ROOT"
        exec setsid nohup "$BIN" run --config "$CONFIG" </dev/null >>"$OUT_FILE" 2>&1
    ) &
    local child=$! rc
    local deadline=$((SECONDS + START_WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$child" 2>/dev/null; then
            rc=0
            wait "$child" || rc=$?
            # 3: another start won the pid lock a moment ago.
            if ((rc == 3)); then
                say "already running"
                return 0
            fi
            say "kafka2mysql exited during start with code $rc; last lines of $OUT_FILE:" >&2
            tail -c +$((out_start + 1)) "$OUT_FILE" | tail -n 20 | sed 's/^/    /' >&2
            if ((rc == 2)); then
                say "the config or the setup is wrong (exit code 2); fix it, then run: $SCRIPT_PATH start --config $CONFIG" >&2
                exit 2
            fi
            exit 1
        fi
        sleep 0.1
    done
    disown "$child" 2>/dev/null || true
    say "started (pid $child); see $SCRIPT_PATH status --config $CONFIG"
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
    [[ -f $config ]] || fail 2 "config file $config does not exist"
    CONFIG=$(readlink -f "$config")
    local base=${CONFIG##*/} stem
    stem=${base%.*}
    NAME=${stem:-$base}
    ENV_FILE=$(dirname "$CONFIG")/$NAME.env
    OUT_FILE=$(dirname "$(dirname "$CONFIG")")/logs/$NAME.out
    find_binary
    load_env_file
    case $command in
        start) do_start ;;
        stop) exec "$BIN" stop --config "$CONFIG" ;;
        restart)
            "$BIN" stop --config "$CONFIG" || exit $?
            do_start
            ;;
        status) exec "$BIN" status --config "$CONFIG" ;;
        check) exec "$BIN" check --config "$CONFIG" ;;
    esac
}

main "$@"
