#!/usr/bin/env bash
# Builds kafka2mysql and installs it into a tree of its own (README.md, "Installing on a VM"):
#
#   scripts/install.sh PREFIX          e.g. scripts/install.sh /opt/kafka2mysql
#
#   PREFIX/bin/kafka2mysql       the binary
#   PREFIX/conf/                 kafka2mysql.toml (the sample, only when there is
#                                none yet), kafka2mysql.toml.sample (always the
#                                newest), kafka2mysql.env (mode 600, only when
#                                there is none yet), crontab.example,
#                                logrotate.example (with PREFIX filled in)
#   PREFIX/scripts/run.sh        start|stop|restart|status, for cron
#   PREFIX/logs/  PREFIX/run/    logs; pid, status and lock files
#
# Running it again upgrades in place: the binary and run.sh are replaced
# atomically (copied to a temporary name, then renamed), so a running service
# keeps running on the old binary until it is restarted; the config and the
# env file are never overwritten. It does not restart the service: it prints
# the command that does.
set -euo pipefail

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"

say() { printf 'install: %s\n' "$*"; }
die() {
    printf 'install: error: %s\n' "$*" >&2
    exit 1
}

if (($# != 1)) || [[ $1 == -* ]]; then
    echo "usage: $(basename "$0") PREFIX    (e.g. /opt/kafka2mysql)" >&2
    exit 2
fi

mkdir -p "$1" || die "cannot create $1"
PREFIX=$(cd "$1" && pwd -P)
[[ $PREFIX != "$REPO" ]] || die "PREFIX is the repository itself; choose another directory, e.g. /opt/kafka2mysql"

# ---------------------------------------------------------------- build

command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs); it builds the binary"
# A static binary (glibc linked in with crt-static): it runs on any x86_64
# Linux VM whatever its libc. --target keeps the flag away from build scripts
# and proc macros, which cannot be static.
TARGET=$(rustc -vV | sed -n 's/^host: //p')
say "building the static release binary (cargo build --release --locked --target $TARGET)"
(cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET") \
    || die "cargo build failed"
BUILT="${CARGO_TARGET_DIR:-$REPO/target}/$TARGET/release/kafka2mysql"
[[ -x $BUILT ]] || die "cargo build succeeded but $BUILT is missing"

# ---------------------------------------------------------------- lay out

# Copies $1 to $2 through a temporary file in $2's directory and a rename, so
# that nothing ever sees a half-written file (and a running binary is not
# written to: it keeps its old inode).
replace_atomically() {
    local source=$1 target=$2 mode=$3 tmp
    tmp=$(mktemp "$(dirname "$target")/.$(basename "$target").new.XXXXXX")
    cp "$source" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$target"
}

# Writes the example files with the real PREFIX instead of /opt/kafka2mysql.
install_example() {
    local source=$1 target=$2 tmp
    tmp=$(mktemp "$(dirname "$target")/.$(basename "$target").new.XXXXXX")
    sed "s#/opt/kafka2mysql#$PREFIX#g" "$source" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$target"
}

mkdir -p "$PREFIX/bin" "$PREFIX/conf" "$PREFIX/scripts" "$PREFIX/logs" "$PREFIX/run"

upgrade=0
[[ -e $PREFIX/bin/kafka2mysql ]] && upgrade=1
replace_atomically "$BUILT" "$PREFIX/bin/kafka2mysql" 755
say "installed $PREFIX/bin/kafka2mysql ($("$PREFIX/bin/kafka2mysql" --version))"
replace_atomically "$REPO/scripts/run.sh" "$PREFIX/scripts/run.sh" 755
say "installed $PREFIX/scripts/run.sh"

replace_atomically "$REPO/conf/kafka2mysql.toml" "$PREFIX/conf/kafka2mysql.toml.sample" 644
if [[ -e $PREFIX/conf/kafka2mysql.toml ]]; then
    say "kept $PREFIX/conf/kafka2mysql.toml (the newest sample is kafka2mysql.toml.sample beside it)"
else
    replace_atomically "$REPO/conf/kafka2mysql.toml" "$PREFIX/conf/kafka2mysql.toml" 644
    say "installed $PREFIX/conf/kafka2mysql.toml: edit kafka.brokers, kafka.topic, kafka.group, mysql.url and mysql.table"
fi

if [[ -e $PREFIX/conf/kafka2mysql.env ]]; then
    say "kept $PREFIX/conf/kafka2mysql.env"
else
    # umask first: the file is never readable by others, not even for a moment.
    (
        umask 077
        cat >"$PREFIX/conf/kafka2mysql.env" <<'EOF'
# Environment for kafka2mysql, read by scripts/run.sh before it starts the
# service (cron passes almost no environment). One KEY=VALUE a line, taken
# literally (no shell expansion). Keep this file mode 600: run.sh refuses it
# when group or others can read it.
#MYSQL_PASSWORD=
EOF
    )
    say "created $PREFIX/conf/kafka2mysql.env (mode 600): set MYSQL_PASSWORD in it"
fi

install_example "$REPO/conf/crontab.example" "$PREFIX/conf/crontab.example"
install_example "$REPO/conf/logrotate.example" "$PREFIX/conf/logrotate.example"
say "installed $PREFIX/conf/crontab.example and $PREFIX/conf/logrotate.example"

# ---------------------------------------------------------------- next steps

cat <<EOF

Next steps:
  1. Edit $PREFIX/conf/kafka2mysql.toml and put the database password into
     $PREFIX/conf/kafka2mysql.env (MYSQL_PASSWORD=...; keep it mode 600).
  2. Check the config, the broker, the database and the table (exit 0 when fine):
       $PREFIX/scripts/run.sh check
  3. Add this line with \`crontab -e\` (as the user that owns $PREFIX/logs and $PREFIX/run):
       * * * * * $PREFIX/scripts/run.sh start --config $PREFIX/conf/kafka2mysql.toml >> $PREFIX/logs/cron.log 2>&1
  4. Rotate the logs: sudo cp $PREFIX/conf/logrotate.example /etc/logrotate.d/kafka2mysql
EOF

if ((upgrade)); then
    rc=0
    "$PREFIX/bin/kafka2mysql" status --local --config "$PREFIX/conf/kafka2mysql.toml" >/dev/null 2>&1 || rc=$?
    if ((rc != 3)); then
        cat <<EOF

This was an upgrade and the service still runs the old binary. Restart it when
convenient (it stops gracefully and commits what it applied, then starts):
  $PREFIX/scripts/run.sh restart
EOF
    else
        echo
        echo "This was an upgrade; the service does not run now (cron starts the new binary)."
    fi
fi
