#!/usr/bin/env bash
# Runs every test (unit and integration) against a real Kafka broker and a
# real MariaDB server from scripts/services.sh, in two phases:
#
#   1. Kafka 4.4.0: `cargo test` of everything but the tests of the kafka
#      crate client (module kafka_rust_client), with `-- --skip kafka_rust_client::`.
#   2. Kafka 3.9.1, the last broker that serves the old protocol versions the
#      kafka crate speaks, with K2M_CLIENT=kafka-rust:
#      `cargo test --test it -- pipeline:: failures:: exactly_once:: kafka_rust_client::`.
#
#   scripts/test.sh                           both phases; stops at the first that fails
#   scripts/test.sh [cargo test args] [-- test binary args]
#                                             just those, as phase 1 (Kafka 4.4.0)
#   KAFKA_VERSION=3.9.1 scripts/test.sh [cargo test args] [-- test binary args]
#                                             just those, as phase 2 (Kafka 3.9.1, K2M_CLIENT=kafka-rust)
#   TEST_THREADS=2 scripts/test.sh --test it -- harness
#
# Installs what is missing (scripts/services.sh install: the Debian packages
# and both brokers' jars), starts the services of each phase (a no-op when
# they run; switching the broker's version restarts it), exports what
# `scripts/services.sh env` prints (the addresses, the SASL_SSL listener, its
# CA and the test passwords) and runs `cargo test`. The services are left
# running; `scripts/services.sh down` stops them.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { printf 'test.sh: %s\n' "$*" >&2; }

# One run at a time on these ports: the script starts again under the lock
# that `scripts/services.sh ports-lock` names ("locked").
[[ -n ${K2M_PORTS_LOCKED:-} ]] || exec "$REPO/scripts/services.sh" locked "$REPO/scripts/test.sh" "$@"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { say "cargo is not installed (https://rustup.rs)"; exit 1; }

# Debian packages (mariadb-server, mariadb-client, kcat, openssl, Java, Maven,
# prometheus for promtool) and the jars of both Kafka versions, each only
# when missing.
scripts/services.sh install || { say "installing the test services' packages failed"; exit 1; }

# Runs `cargo test ARGS` against Kafka VERSION, with K2M_CLIENT=CLIENT unless
# CLIENT is empty, in a subshell so that the phases do not share exports.
run_phase() {
    local version=$1 client=$2
    shift 2
    (
        started=$SECONDS
        local up
        if ! up=$(KAFKA_VERSION=$version scripts/services.sh up); then
            say "the test services (Kafka $version) did not start; the message above names the service and its log"
            exit 1
        fi
        say "services up in $((SECONDS - started))s"
        scripts/services.sh status >&2 || true
        # What scripts/demo.sh reads: KEY=VALUE lines only, whatever the
        # first start printed (a cold jar cache once put mvn's output there).
        if grep -qvE '^[A-Z][A-Z0-9_]*=' <<<"$up"; then
            say "scripts/services.sh up printed more than KEY=VALUE lines on stdout:"
            printf '%s\n' "$up" >&2
            exit 1
        fi
        # KAFKA_VERSION, KAFKA_BROKERS, KAFKA_SASL_BROKERS, KAFKA_SSL_CA,
        # KAFKA_SASL_USER, KAFKA_SASL_TEST_PASSWORD, MYSQL_URL, MYSQL_PASSWORD.
        eval "$(KAFKA_VERSION=$version scripts/services.sh env)"
        if [[ -n $client ]]; then
            export K2M_CLIENT=$client
        fi
        say "Kafka $version${client:+, K2M_CLIENT=$client}: cargo test $*"
        cargo test "$@"
    )
}

threads=--test-threads="${TEST_THREADS:-4}"

if (($# == 0)); then
    say "phase 1 of 2: Kafka 4.4.0"
    run_phase 4.4.0 "" -- "$threads" --skip kafka_rust_client:: || { say "phase 1 (Kafka 4.4.0) failed"; exit 1; }
    say "phase 2 of 2: Kafka 3.9.1 with the kafka crate client"
    run_phase 3.9.1 kafka-rust --test it -- "$threads" pipeline:: failures:: exactly_once:: kafka_rust_client:: \
        || { say "phase 2 (Kafka 3.9.1, K2M_CLIENT=kafka-rust) failed"; exit 1; }
    say "both phases passed"
    exit 0
fi

# Arguments before `--` go to cargo, the rest to the test binaries, after
# our own --test-threads.
cargo_args=()
test_args=()
while (($# > 0)); do
    if [[ $1 == -- ]]; then
        shift
        test_args=("$@")
        break
    fi
    cargo_args+=("$1")
    shift
done

case ${KAFKA_VERSION:-4.4.0} in
    3.9.1) run_phase 3.9.1 kafka-rust "${cargo_args[@]}" -- "$threads" "${test_args[@]}" ;;
    4.4.0) run_phase 4.4.0 "" "${cargo_args[@]}" -- "$threads" "${test_args[@]}" --skip kafka_rust_client:: ;;
    *) say "KAFKA_VERSION=$KAFKA_VERSION: the tests run against 4.4.0 (the default) or 3.9.1"; exit 2 ;;
esac
