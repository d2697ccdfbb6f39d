#!/usr/bin/env bash
# Runs every test (unit and integration) against a real Kafka broker and a
# real MariaDB server from scripts/services.sh (DESIGN.md section 8).
#
#   scripts/test.sh [cargo test args] [-- test binary args]
#   TEST_THREADS=2 scripts/test.sh --test it -- harness
#
# Installs what is missing, starts the services (a no-op when they run),
# exports their addresses for the tests and runs `cargo test`. The services
# are left running; `scripts/services.sh down` stops them.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { printf 'test.sh: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { say "cargo is not installed (https://rustup.rs)"; exit 1; }

# Debian packages (mariadb-server, mariadb-client, kcat, Java, Maven) and the
# Kafka jars, each only when missing.
scripts/services.sh install || { say "installing the test services' packages failed"; exit 1; }

started=$SECONDS
if ! scripts/services.sh up >/dev/null; then
    say "the test services did not start; the message above names the service and its log"
    exit 1
fi
say "services up in $((SECONDS - started))s"
scripts/services.sh status >&2

eval "$(scripts/services.sh env)"
export KAFKA_BROKERS MYSQL_URL MYSQL_PASSWORD
export MYSQL_ROOT_CMD="$REPO/scripts/services.sh mysql"

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

exec cargo test "${cargo_args[@]}" -- --test-threads="${TEST_THREADS:-4}" "${test_args[@]}"
