# shellcheck shell=bash
# Helpers shared by the scripts/testenv components. Sourced by scripts/testenv;
# not meant to be run on its own. Every helper is prefixed with `tenv_`.

: "${NEXUS_TESTENV_CACHE:=$HOME/.cache/nexus-testenv}"
: "${NEXUS_TESTENV_RUN:=$NEXUS_TESTENV_CACHE/run}"
export NEXUS_TESTENV_CACHE NEXUS_TESTENV_RUN

# Seconds `up` waits for a server to answer, per component (a component may
# use its own variable first, e.g. NEXUS_TESTENV_CASSANDRA_TIMEOUT).
: "${NEXUS_TESTENV_TIMEOUT:=180}"

tenv_log() { printf '[testenv] %s\n' "$*" >&2; }
tenv_die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

# Monotonic-ish seconds with a fraction, for start-up timings.
tenv_now() { date +%s.%N; }
tenv_elapsed() { awk -v a="$1" -v b="$(tenv_now)" 'BEGIN { printf "%.1f", b - a }'; }

# CPU seconds (user+system) a process has used so far.
tenv_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"
}

tenv_mkdir() { mkdir -p "$@" || tenv_die "cannot create $*"; }

# Run folder of one component, created on demand.
tenv_rundir() { tenv_mkdir "$NEXUS_TESTENV_RUN/$1"; printf '%s\n' "$NEXUS_TESTENV_RUN/$1"; }
tenv_pidfile() { printf '%s\n' "$NEXUS_TESTENV_RUN/$1.pid"; }
tenv_envfile() { printf '%s\n' "$NEXUS_TESTENV_RUN/$1.env"; }

# Print the pid recorded for component $1 if that process is alive and still
# is the one we started (its command line contains the run folder of the
# component, guarding against a recycled pid). Returns 1 otherwise.
tenv_pid() {
    local name=$1 pidfile pid
    pidfile=$(tenv_pidfile "$name")
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # A zombie is as good as gone.
    if [[ -r /proc/$pid/stat ]]; then
        local state
        state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)
        [[ $state == Z ]] && return 1
    fi
    if [[ -r /proc/$pid/cmdline ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$NEXUS_TESTENV_RUN/$name" || return 1
    fi
    printf '%s\n' "$pid"
}

# tenv_spawn NAME LOGFILE CMD...: start CMD detached in a new session (so it
# survives the calling shell and can be stopped as a group), stdin from
# /dev/null, stdout+stderr to LOGFILE (emptied first), without the lock fd 9;
# records the pid in $(tenv_pidfile NAME) and in $TENV_SPAWNED_PID.
tenv_spawn() {
    local name=$1 logfile=$2; shift 2
    local pidfile
    pidfile=$(tenv_pidfile "$name")
    tenv_mkdir "$(dirname "$logfile")" "$NEXUS_TESTENV_RUN"
    : >"$logfile"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    else
        nohup "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    fi
    local pid=$! i
    printf '%s\n' "$pid" >"$pidfile"
    # Until the child has exec'd, /proc/<pid>/cmdline is still this shell's, and tenv_pid
    # (which checks the command line) would take a process that is starting for one that
    # is gone: a CI run once stopped a healthy kwok as "exited" that way. Wait for the exec.
    for ((i = 0; i < 100; i++)); do
        tenv_pid "$name" >/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    # shellcheck disable=SC2034  # read by the components
    TENV_SPAWNED_PID=$pid
}

# tenv_stop_pid NAME [TIMEOUT [SIGNAL]]: send SIGNAL (default TERM) to the
# recorded process (and its process group), wait until it is gone, SIGKILL
# after TIMEOUT seconds. Removes the pid file. Returns 0 when nothing is left
# running.
tenv_stop_pid() {
    local name=$1 timeout=${2:-30} sig=${3:-TERM} pid pidfile i
    pidfile=$(tenv_pidfile "$name")
    if ! pid=$(tenv_pid "$name"); then
        rm -f "$pidfile"
        tenv_log "$name: not running"
        return 0
    fi
    tenv_log "$name: stopping pid $pid (SIG$sig)"
    tenv_signal "$pid" "$sig"
    for ((i = 0; i < timeout * 10; i++)); do
        tenv_gone "$pid" && break
        sleep 0.1
    done
    if ! tenv_gone "$pid"; then
        tenv_log "$name: pid $pid still alive after ${timeout}s, sending SIGKILL"
        tenv_signal "$pid" KILL
        for ((i = 0; i < 100; i++)); do
            tenv_gone "$pid" && break
            sleep 0.1
        done
    fi
    if ! tenv_gone "$pid"; then
        tenv_log "$name: pid $pid did not go away"
        return 1
    fi
    rm -f "$pidfile"
    tenv_log "$name: stopped"
}

# Signal a pid and, when it leads its own process group (we start servers with
# setsid), the whole group.
tenv_signal() {
    local pid=$1 sig=$2 pgid
    pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
    if [[ -n $pgid && $pgid == "$pid" ]]; then
        kill -s "$sig" -- "-$pid" 2>/dev/null || true
    fi
    kill -s "$sig" "$pid" 2>/dev/null || true
}

# True when pid is gone (or a zombie; our children are reaped by init since
# we detach them with setsid, but be safe).
tenv_gone() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    [[ -r /proc/$pid/stat ]] && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
    return 1
}

# tenv_port_open HOST PORT: a TCP connect succeeds.
tenv_port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# tenv_require_free_port NAME PORT...: fail early with who holds a port.
tenv_require_free_port() {
    local name=$1 port; shift
    for port in "$@"; do
        if tenv_port_open 127.0.0.1 "$port"; then
            local who=""
            command -v ss >/dev/null 2>&1 && who=$(ss -ltnpH "sport = :$port" 2>/dev/null | head -3)
            tenv_die "$name: port $port on 127.0.0.1 is already in use${who:+: $who} (override the port, see scripts/testenv.d/README.md)"
        fi
    done
}

# tenv_fail_start NAME LOGFILE... : print the tail of each log, stop whatever is
# left of the server, exit non-zero.
tenv_fail_start() {
    local name=$1 msg=$2; shift 2
    local f
    tenv_log "$name: $msg"
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf '[testenv] ---- last lines of %s ----\n' "$f" >&2
        tail -n "${NEXUS_TESTENV_LOG_LINES:-60}" "$f" >&2
        printf '[testenv] ---- end of %s ----\n' "$f" >&2
    done
    tenv_stop_pid "$name" 10 || true
    exit 1
}

# Python with the modules needed (the project's venv first).
tenv_repo_root() { (cd "$TENV_DIR/../.." && pwd); }
tenv_python_with() {
    local module=$1 py root
    root=$(tenv_repo_root)
    for py in ${NEXUS_PYTHON:+"$NEXUS_PYTHON"} "$root/.venv/bin/python" python3; do
        command -v "$py" >/dev/null 2>&1 || [[ -x $py ]] || continue
        if "$py" -c "import $module" >/dev/null 2>&1; then
            printf '%s\n' "$py"
            return 0
        fi
    done
    return 1
}
tenv_python() {
    local py=${NEXUS_PYTHON:-python3}
    command -v "$py" >/dev/null 2>&1 || py=python3
    printf '%s\n' "$py"
}

# Write the env file of component NAME from "VAR=value" arguments.
tenv_write_env() {
    local name=$1 kv; shift
    local f
    f=$(tenv_envfile "$name")
    tenv_mkdir "$NEXUS_TESTENV_RUN"
    : >"$f.tmp"
    for kv in "$@"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}" >>"$f.tmp"
    done
    mv "$f.tmp" "$f"
}

# tenv_locked NAME CMD...: run CMD (in a subshell) holding an exclusive lock
# for component NAME, so that two `scripts/testenv up` runs on one machine do
# not start the same server twice.
tenv_locked() {
    local name=$1; shift
    tenv_mkdir "$NEXUS_TESTENV_RUN"
    if ! command -v flock >/dev/null 2>&1; then
        "$@"
        return
    fi
    (
        if ! flock -n 9; then
            tenv_log "$name: another scripts/testenv holds $NEXUS_TESTENV_RUN/.$name.lock, waiting"
            flock -w "${NEXUS_TESTENV_LOCK_TIMEOUT:-1200}" 9 || tenv_die "$name: timed out waiting for the lock"
        fi
        "$@"
    ) 9>"$NEXUS_TESTENV_RUN/.${name//\//_}.lock"
}
