# shellcheck shell=bash
# Component "cassandra": Apache Cassandra 5.0.x (org.apache.cassandra:cassandra-all
# from Maven Central) run directly with the machine's Java 17, single node on
# 127.0.0.1. Sourced by scripts/testenv (needs common.sh).
#
# Settings (environment):
#   NEXUS_TEST_CASSANDRA_PORT           CQL port (default 9042)
#
# Logins are checked (PasswordAuthenticator): clients use the built-in superuser
# cassandra/cassandra, exported as NEXUS_TEST_CASSANDRA_USER and _PASSWORD, so every test
# goes through nexus's credentials settings. The CQL port also speaks TLS (optional, so
# plain clients still connect) with a self-signed certificate for IP 127.0.0.1 made by
# the JDK's keytool; its PEM is exported as NEXUS_TEST_CASSANDRA_TLS_CA.
#   NEXUS_TESTENV_CASSANDRA_VERSION     cassandra-all version (default 5.0.9)
#   NEXUS_TESTENV_CASSANDRA_STORAGE_PORT internode port (default 17000; +1 for TLS)
#   NEXUS_TESTENV_CASSANDRA_HEAP        -Xmx (default 1g); NEXUS_TESTENV_CASSANDRA_HEAP_MIN -Xms (512m)
#   NEXUS_TESTENV_CASSANDRA_TIMEOUT     seconds to wait for CQL (default 240)
#   NEXUS_TESTENV_CASSANDRA_JMX_PORT    if set, local-only JMX on that port (nodetool)
#   NEXUS_TESTENV_CASSANDRA_FAST_START  1 (default): C1 JIT only, faster start; 0 for benchmarks
#   NEXUS_TESTENV_CASSANDRA_JVM_OPTS    extra JVM options (space separated, added last)
#   JAVA_HOME / NEXUS_TESTENV_JAVA      the java to run (default: java on PATH)

cassandra__version() { printf '%s\n' "${NEXUS_TESTENV_CASSANDRA_VERSION:-5.0.9}"; }
cassandra__home() { printf '%s\n' "$NEXUS_TESTENV_CACHE/cassandra/$(cassandra__version)"; }
cassandra__port() { printf '%s\n' "${NEXUS_TEST_CASSANDRA_PORT:-9042}"; }
CASSANDRA_USER=cassandra CASSANDRA_PASSWORD=cassandra
CASSANDRA_TLS_PASSWORD=nexus-test-tls
cassandra__env_lines() {
    printf '%s\n' "NEXUS_TEST_CASSANDRA_HOSTS=127.0.0.1" "NEXUS_TEST_CASSANDRA_PORT=$1" \
        "NEXUS_TEST_CASSANDRA_USER=$CASSANDRA_USER" "NEXUS_TEST_CASSANDRA_PASSWORD=$CASSANDRA_PASSWORD" \
        "NEXUS_TEST_CASSANDRA_TLS_CA=$NEXUS_TESTENV_RUN/cassandra/conf/tls/ca.pem"
}

# The server's key and self-signed certificate (PKCS12) and the certificate as PEM, made
# once per run folder with the keytool of the java that runs Cassandra.
cassandra__tls_material() {
    local dir=$1/conf/tls java keytool
    [[ -s $dir/keystore.p12 && -s $dir/ca.pem ]] && return 0
    java=$(cassandra__java)
    keytool="$(dirname "$(readlink -f "$java")")/keytool"
    [[ -x $keytool ]] || keytool=$(command -v keytool) ||
        tenv_die "cassandra: no keytool next to $java (needed for the test TLS certificate)"
    tenv_mkdir "$dir"
    rm -f "$dir/keystore.p12" "$dir/ca.pem"
    "$keytool" -genkeypair -alias node -keyalg RSA -keysize 2048 -validity 3650 \
        -dname "CN=nexus-test-cassandra" -ext "SAN=IP:127.0.0.1" -ext "BC=ca:true" \
        -keystore "$dir/keystore.p12" -storetype PKCS12 \
        -storepass "$CASSANDRA_TLS_PASSWORD" -keypass "$CASSANDRA_TLS_PASSWORD" >"$dir/keytool.log" 2>&1 ||
        tenv_fail_start cassandra "keytool could not make the test certificate" "$dir/keytool.log"
    "$keytool" -exportcert -rfc -alias node -keystore "$dir/keystore.p12" -storetype PKCS12 \
        -storepass "$CASSANDRA_TLS_PASSWORD" -file "$dir/ca.pem" >>"$dir/keytool.log" 2>&1 ||
        tenv_fail_start cassandra "keytool could not export the test certificate" "$dir/keytool.log"
}
cassandra__storage_port() { printf '%s\n' "${NEXUS_TESTENV_CASSANDRA_STORAGE_PORT:-17000}"; }

cassandra__java() {
    if [[ -n ${NEXUS_TESTENV_JAVA:-} ]]; then
        printf '%s\n' "$NEXUS_TESTENV_JAVA"
    elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java || tenv_die "cassandra: no java on PATH (Cassandra 5.0 needs Java 11 or 17)"
    fi
}

cassandra__java_major() {
    local v
    v=$("$1" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ { print $2; exit }')
    printf '%s\n' "${v%%.*}"
}

cassandra_install() {
    local home version pom tmp
    home=$(cassandra__home)
    version=$(cassandra__version)
    [[ -f $home/.complete ]] && return 0
    command -v mvn >/dev/null 2>&1 || tenv_die "cassandra: mvn (Maven) is needed to fetch cassandra-all $version"
    pom="$TENV_DIR/cassandra-pom.xml"
    tenv_log "cassandra: resolving org.apache.cassandra:cassandra-all:$version with Maven into $home/lib"
    tenv_mkdir "$(dirname "$home")"
    tmp="$home.tmp.$$"
    rm -rf "$tmp"
    tenv_mkdir "$tmp"
    if ! mvn -B -q -f "$pom" -Dcassandra.version="$version" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp/lib" >"$tmp/mvn.log" 2>&1; then
        tail -n 40 "$tmp/mvn.log" >&2
        rm -rf "$tmp"
        tenv_die "cassandra: Maven could not resolve cassandra-all $version"
    fi
    # Native-code jars for other platforms are useless here; keep the tree small.
    rm -f "$tmp"/lib/*-osx-*.jar "$tmp"/lib/*-windows-*.jar
    [[ -f $tmp/lib/cassandra-all-$version.jar ]] || tenv_die "cassandra: cassandra-all-$version.jar missing after Maven"
    rm -rf "$home"
    mv "$tmp" "$home"
    touch "$home/.complete"
    tenv_log "cassandra: installed $(find "$home/lib" -name '*.jar' | wc -l) jars"
}

cassandra__write_config() {
    local rd=$1 port storage_port
    port=$(cassandra__port)
    storage_port=$(cassandra__storage_port)
    tenv_mkdir "$rd/conf" "$rd/data" "$rd/commitlog" "$rd/saved_caches" "$rd/hints" "$rd/cdc_raw" "$rd/logs" "$rd/triggers"
    cat >"$rd/conf/cassandra.yaml" <<EOF
# Generated by scripts/testenv.d/cassandra.sh: single-node test server.
cluster_name: nexus-test
num_tokens: 16
allocate_tokens_for_local_replication_factor: 1
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage_port"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage_port
ssl_storage_port: $((storage_port + 1))
native_transport_port: $port
start_native_transport: true
data_file_directories:
  - $rd/data
commitlog_directory: $rd/commitlog
saved_caches_directory: $rd/saved_caches
hints_directory: $rd/hints
cdc_raw_directory: $rd/cdc_raw
# group: a write is acknowledged only once its commit-log group is synced, so a node that
# is SIGKILLed keeps every write it acknowledged (periodic would lose the last 10 s).
commitlog_sync: group
commitlog_sync_group_window: 10ms
commitlog_segment_size: 8MiB
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer
client_encryption_options:
  enabled: true
  optional: true
  keystore: $rd/conf/tls/keystore.p12
  keystore_password: $CASSANDRA_TLS_PASSWORD
  store_type: PKCS12
  require_client_auth: false
role_manager: CassandraRoleManager
disk_failure_policy: stop
commit_failure_policy: stop
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_materialized_view_writes: 8
compaction_throughput: 64MiB/s
key_cache_size: 16MiB
counter_cache_size: 4MiB
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
read_request_timeout: 10000ms
range_request_timeout: 20000ms
write_request_timeout: 10000ms
cas_contention_timeout: 5000ms
request_timeout: 20000ms
materialized_views_enabled: true
sasi_indexes_enabled: true
user_defined_functions_enabled: false
dynamic_snitch: false
hinted_handoff_enabled: false
EOF
    cat >"$rd/conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$rd/logs/system.log</file>
    <append>true</append>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
EOF
}

cassandra__jvm_opts() {
    local rd=$1 home heap xms
    home=$(cassandra__home)
    heap=${NEXUS_TESTENV_CASSANDRA_HEAP:-1g}
    xms=${NEXUS_TESTENV_CASSANDRA_HEAP_MIN:-512m}
    TENV_JVM_OPTS=(
        "-Xms$xms" "-Xmx$heap" -Xss256k
        -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
        -XX:G1HeapRegionSize=4m -XX:MaxGCPauseMillis=300
        -XX:+UseThreadPriorities -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError
        -XX:ActiveProcessorCount="${NEXUS_TESTENV_CASSANDRA_CPUS:-2}"
        -ea -da:net.openhft...
        -Djava.net.preferIPv4Stack=true
        -Djdk.attach.allowAttachSelf=true
        # From Cassandra's conf/jvm17-server.options (JPMS).
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        --add-opens java.base/java.nio=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        -Dchronicle.analytics.disable=true
        # Cassandra itself.
        "-Dcassandra.config=file://$rd/conf/cassandra.yaml"
        "-Dlogback.configurationFile=file://$rd/conf/logback.xml"
        "-Dcassandra.logdir=$rd/logs"
        "-Dcassandra.storagedir=$rd"
        "-Dcassandra.triggers_dir=$rd/triggers"
        -Dcassandra-foreground=yes
        # Fast single-node start-up.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        -Dcassandra.superuser_setup_delay_ms=0
        -Dcassandra.load_ring_state=false
        -Dcassandra.available_processors="${NEXUS_TESTENV_CASSANDRA_CPUS:-2}"
        # No peers to agree on a schema with.
        -Dcassandra.skip_schema_check=true
    )
    # C1 only: about a third less CPU to start on this 2-core machine; set
    # NEXUS_TESTENV_CASSANDRA_FAST_START=0 for benchmarks (full JIT).
    if [[ ${NEXUS_TESTENV_CASSANDRA_FAST_START:-1} == 1 ]]; then
        TENV_JVM_OPTS+=(-XX:TieredStopAtLevel=1)
    fi
    if [[ -n ${NEXUS_TESTENV_CASSANDRA_JMX_PORT:-} ]]; then
        TENV_JVM_OPTS+=("-Dcassandra.jmx.local.port=$NEXUS_TESTENV_CASSANDRA_JMX_PORT")
    fi
    # jamm measures object sizes; Cassandra's start script loads it as an agent.
    local jamm
    jamm=$(find "$home/lib" -maxdepth 1 -name 'jamm-*.jar' | sort | tail -n 1)
    [[ -n $jamm ]] && TENV_JVM_OPTS+=("-javaagent:$jamm")
    # Extra options, space separated, last so they win.
    if [[ -n ${NEXUS_TESTENV_CASSANDRA_JVM_OPTS:-} ]]; then
        local extra
        read -r -a extra <<<"$NEXUS_TESTENV_CASSANDRA_JVM_OPTS"
        TENV_JVM_OPTS+=("${extra[@]}")
    fi
}

# One real CQL round trip; prints the release version. Exit 0 when it works.
cassandra__cql_ping() {
    local py=$1 port=$2
    "$py" - "$port" "$CASSANDRA_USER" "$CASSANDRA_PASSWORD" <<'PY' 2>/dev/null
import logging, sys
logging.disable(logging.CRITICAL)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster
from cassandra.policies import WhiteListRoundRobinPolicy
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# A login that works also means the superuser role exists (it is created just after start).
cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=5, control_connection_timeout=5,
                  auth_provider=PlainTextAuthProvider(user, password),
                  load_balancing_policy=WhiteListRoundRobinPolicy(["127.0.0.1"]))
try:
    session = cluster.connect()
    row = session.execute("SELECT release_version FROM system.local", timeout=10).one()
    print(row.release_version)
finally:
    cluster.shutdown()
PY
}

cassandra_start() {
    local rd port java major cp home t0 pid py timeout ver deadline
    rd=$(tenv_rundir cassandra)
    port=$(cassandra__port)
    home=$(cassandra__home)
    timeout=${NEXUS_TESTENV_CASSANDRA_TIMEOUT:-240}
    [[ -f $home/.complete ]] || cassandra_install
    t0=$(tenv_now)
    if pid=$(tenv_pid cassandra); then
        tenv_log "cassandra: pid $pid already started, waiting for it to answer"
    else
        java=$(cassandra__java)
        major=$(cassandra__java_major "$java")
        [[ $major == 11 || $major == 17 ]] ||
            tenv_log "cassandra: WARNING: Java $major; Cassandra 5.0 supports Java 11 and 17"
        tenv_require_free_port cassandra "$port" "$(cassandra__storage_port)"
        cassandra__tls_material "$rd"
        cassandra__write_config "$rd"
        # Keep the previous run's log aside so a failure shows this run only.
        [[ -f $rd/logs/system.log ]] && mv -f "$rd/logs/system.log" "$rd/logs/system.log.1"
        cassandra__jvm_opts "$rd"
        cp="$home/lib/*"
        tenv_log "cassandra: starting $(cassandra__version) on 127.0.0.1:$port (logs: $rd/logs)"
        tenv_spawn cassandra "$rd/logs/stdout.log" \
            "$java" "${TENV_JVM_OPTS[@]}" -cp "$cp" org.apache.cassandra.service.CassandraDaemon
        pid=$TENV_SPAWNED_PID
    fi
    local lines
    mapfile -t lines < <(cassandra__env_lines "$port")
    tenv_write_env cassandra "${lines[@]}"

    py=$(tenv_python_with cassandra.cluster || true)
    [[ -n $py ]] || tenv_log "cassandra: no python with the 'cassandra' driver; readiness = TCP + log line"
    deadline=$(($(date +%s) + timeout))
    while :; do
        if ! tenv_gone "$pid" && [[ $(date +%s) -ge $deadline ]]; then
            tenv_fail_start cassandra "did not answer CQL on 127.0.0.1:$port within ${timeout}s" \
                "$rd/logs/system.log" "$rd/logs/stdout.log"
        fi
        if tenv_gone "$pid"; then
            tenv_fail_start cassandra "the server exited during start-up" \
                "$rd/logs/system.log" "$rd/logs/stdout.log"
        fi
        if tenv_port_open 127.0.0.1 "$port"; then
            if [[ -n $py ]]; then
                if ver=$(cassandra__cql_ping "$py" "$port"); then break; fi
            elif grep -q "Starting listening for CQL clients" "$rd/logs/system.log" 2>/dev/null; then
                ver="(not queried)"
                break
            fi
        fi
        sleep 1
    done
    tenv_log "cassandra: ready on 127.0.0.1:$port, release $ver, pid $pid, in $(tenv_elapsed "$t0")s (server cpu $(tenv_cpu_seconds "$pid")s)"
}

cassandra_stop() {
    tenv_stop_pid cassandra "${NEXUS_TESTENV_CASSANDRA_STOP_TIMEOUT:-60}"
}

cassandra_kill() {
    tenv_stop_pid cassandra 10 KILL
}

cassandra_status() {
    local pid port
    port=$(cassandra__port)
    [[ -f $(tenv_envfile cassandra) ]] && port=$(sed -n 's/^export NEXUS_TEST_CASSANDRA_PORT=//p' "$(tenv_envfile cassandra)")
    if pid=$(tenv_pid cassandra) && tenv_port_open 127.0.0.1 "$port"; then
        echo "cassandra: running, pid $pid, CQL on 127.0.0.1:$port"
    elif [[ -n ${pid:-} ]]; then
        echo "cassandra: starting (pid $pid, port $port not open yet)"
        return 1
    else
        echo "cassandra: stopped"
        return 1
    fi
}

cassandra_env() {
    local f
    f=$(tenv_envfile cassandra)
    if [[ -s $f ]]; then
        cat "$f"
    else
        cassandra__env_lines "$(cassandra__port)" | sed 's/^/export /'
    fi
}

cassandra_clean() {
    rm -rf "${NEXUS_TESTENV_RUN:?}/cassandra" "$(tenv_envfile cassandra)"
    tenv_log "cassandra: data removed"
}

cassandra_logs() {
    echo "$NEXUS_TESTENV_RUN/cassandra/logs/system.log"
    echo "$NEXUS_TESTENV_RUN/cassandra/logs/stdout.log"
}
