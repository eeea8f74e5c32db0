# shellcheck shell=bash
# Sourced by every script in tools/ and .ci/: strict mode, and no silent
# exit. Any command that fails (outside an `if` or `||`) prints the script,
# the line and the command, then the script exits with that command's status.
#
#   . "$(dirname "$0")/lib.sh"     (then `die`, `say`, `apt_get`, `need_root`)

set -Eeuo pipefail
shopt -s inherit_errexit

script=${0##*/}

on_error() {
    local status=$1 line=$2 command=$3 file=$4 text
    # The whole source line: BASH_COMMAND names only the last command of a
    # failed pipeline.
    text=$(sed -n "${line}{s/^[[:space:]]*//;p}" "$file" 2>/dev/null || true)
    [[ -n $text && $text == *"${command%% *}"* ]] && command=$text
    local where="line $line"
    [[ ${file##*/} == "$script" ]] || where="${file#"$PWD"/}, line $line"
    echo "$script: $where: '$command' failed (exit $status)" >&2
    exit "$status"
}
trap 'on_error $? "$LINENO" "$BASH_COMMAND" "${BASH_SOURCE[0]}"' ERR

say() { echo "$script: $*" >&2; }

die() {
    echo "$script: $*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) == 0 ]] || die "run as root: $1"
}

# HOME must be set for rustup and cargo; a cron job or `env -i` may clear it.
if [[ -z ${HOME:-} ]]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    [[ -n $HOME ]] || die "HOME is not set and uid $(id -u) has no home directory in the password database: set HOME"
    export HOME
    say "HOME was not set; using $HOME (the home directory of uid $(id -u))"
fi

# A Rust installed by rustup lives in ~/.cargo/bin, which a non-login shell
# may not have on PATH.
use_cargo_env() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        say "cargo is not on PATH; using $HOME/.cargo/bin"
        PATH=$HOME/.cargo/bin:$PATH
        export PATH
    fi
}

# How long apt waits for a dpkg lock another process holds (seconds).
apt_lock_timeout=${OSBUILD_APT_LOCK_TIMEOUT:-600}

# Prints who holds the dpkg frontend lock ("pid 123 (apt-get)"), if anyone.
dpkg_lock_holder() {
    { lslocks -n -o PID,COMMAND,PATH 2>/dev/null || true; } |
        awk '$3 == "/var/lib/dpkg/lock-frontend" || $3 == "/var/lib/dpkg/lock" { print "pid " $1 " (" $2 ")"; exit }'
}

# OSBUILD_SETUP_SIMULATE=1: apt-get install only simulates (-s) and
# apt-get update is skipped: what would be installed, from where.
apt_simulate=${OSBUILD_SETUP_SIMULATE:-0}

# apt-get with its output shown and kept: on failure, the last lines and a
# one-line reason (the lock, the network, the mirror), never a bare exit.
apt_get() {
    local log holder status=0
    if [[ $apt_simulate == 1 ]]; then
        case $1 in
            update) say "simulating: skipped apt-get update"; return ;;
            install) set -- install -s "${@:2}" ;;
        esac
    fi
    log=$(mktemp /tmp/osbuild-apt.XXXXXX)
    holder=$(dpkg_lock_holder)
    if [[ -n $holder ]]; then
        say "the dpkg lock is held by $holder; waiting up to ${apt_lock_timeout}s for it"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout="$apt_lock_timeout" "$@" 2>&1 |
        tee "$log" >&2 || status=$?
    if ((status)); then
        echo "--- the last lines of apt-get's output:" >&2
        tail -n 15 "$log" >&2
        echo "---" >&2
        local why="apt-get $* failed (exit $status)"
        if grep -q 'Could not get lock\|Unable to acquire the dpkg frontend lock' "$log"; then
            holder=$(dpkg_lock_holder)
            why="apt-get $1: the dpkg lock was still held${holder:+ by $holder} after ${apt_lock_timeout}s; wait for that process to finish (or set OSBUILD_APT_LOCK_TIMEOUT), then run again"
        elif grep -q 'Temporary failure resolving\|Could not resolve\|Could not connect\|Network is unreachable\|Connection timed out\|Connection failed' "$log"; then
            why="apt-get $1: the Debian mirror cannot be reached (no network, or the mirror in /etc/apt is down); check with 'apt-get update'"
        elif grep -q 'Unable to locate package\|has no installation candidate' "$log"; then
            why="apt-get $1: a package is not in the configured suites; run 'apt-get update', and check /etc/apt/sources.list.d"
        fi
        rm -f "$log"
        die "$why"
    fi
    # A failed download of one index is only a warning to apt-get update,
    # and leaves it without the suite we need: say so.
    if [[ $1 == update ]] && grep -q '^W: Failed to fetch\|^Err:' "$log"; then
        grep '^W: Failed to fetch\|^Err:' "$log" | head -n 3 >&2
        rm -f "$log"
        die "apt-get update could not fetch every index (above): the Debian mirror cannot be reached or does not serve a configured suite"
    fi
    rm -f "$log"
}
