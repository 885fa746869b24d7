# shellcheck shell=bash
# Component "kube" of scripts/testenv: a real Kubernetes control plane on
# loopback for the integration tests, and the helm binary.
#
#   etcd                      built from go.etcd.io/etcd/server/v3 (wrapper module kube/etcd)
#   kube-apiserver            built from k8s.io/kubernetes (wrapper module kube/build)
#   kube-controller-manager   (the real Job, GC, TTL and service-account controllers)
#   kube-scheduler
#   kwok                      sigs.k8s.io/kwok: two fake nodes and the pod lifecycles of
#                             kube/kwok.yaml (annotations nexus.test/* drive outcomes)
#   helm                      helm.sh/helm/v3/cmd/helm (only installed, not started)
#
# Binaries are built once per machine into $NEXUS_TESTENV_CACHE/kube/bin; the
# run folder is $NEXUS_TESTENV_RUN/kube (certificates, kubeconfig, data, logs).
# Notes, versions and pitfalls: scripts/testenv.d/kube.md.
#
# Settings (environment):
#   NEXUS_TEST_KUBE_PORT          kube-apiserver secure port on 127.0.0.1 (default 6443;
#                                 when unset and 6443 is taken, a free port is used)
#   NEXUS_TESTENV_KUBE_TIMEOUT    seconds to wait for the control plane (default 120)
#   NEXUS_TESTENV_GO_JOBS         go build -p (default 2)
#   NEXUS_TESTENV_KUBE_NODES      number of fake nodes (default 2)
#
# Sourced by scripts/testenv (which sources common.sh first); it can also be
# sourced on its own in bash for manual use.

KUBE_TENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
declare -F tenv_spawn >/dev/null || source "$KUBE_TENV_DIR/common.sh"

# Pinned versions. K8S must match kube/build/go.mod, ETCD kube/etcd/go.mod.
KUBE_K8S_VERSION=v1.36.3
KUBE_ETCD_VERSION=v3.6.16
KUBE_KWOK_VERSION=v0.8.0
KUBE_HELM_VERSION=v3.22.0
# helm's Makefile sets its default Kubernetes version (used by `helm template`
# and `helm lint` without a cluster) from its client-go module: v0.37 -> 1.37.
KUBE_HELM_K8S_MINOR=37

kube__bindir() { printf '%s\n' "$NEXUS_TESTENV_CACHE/kube/bin"; }
# The instance: "kube" (the first control plane) or "kube2" (the second, see kube2.sh,
# which calls these functions with KUBE_NAME=kube2). Binaries are shared; run folder,
# pid files, ports and the exported variables are per instance.
kube__name() { printf '%s\n' "${KUBE_NAME:-kube}"; }
# The suffix of the exported variables: NEXUS_TEST_KUBECONFIG, NEXUS_TEST_KUBECONFIG_2.
kube__var_suffix() { [[ $(kube__name) == kube ]] || printf '_%s\n' "${KUBE_NAME#kube}"; }
kube__rundir() { printf '%s\n' "$NEXUS_TESTENV_RUN/$(kube__name)"; }
# kube__base PORT: where this instance starts looking for a free port (kube2: +100),
# so the two control planes never race for the same numbers.
kube__base() { local name; name=$(kube__name); local n=${name#kube}; printf '%s\n' $(($1 + 100 * (${n:-1} - 1))); }
# The variable that pins the API server's port: NEXUS_TEST_KUBE_PORT, NEXUS_TEST_KUBE2_PORT.
kube__port_var() { printf 'NEXUS_TEST_%s_PORT\n' "$(kube__name | tr '[:lower:]' '[:upper:]')"; }
kube__kubeconfig() { printf '%s\n' "$(kube__rundir)/admin.kubeconfig"; }

# ---------------------------------------------------------------- install

# kube__stamp NAME: what a binary was built from; a change rebuilds it.
kube__stamp() {
    local name=$1
    case $name in
        kube) printf 'k8s %s go %s sum %s\n' "$KUBE_K8S_VERSION" "$(go env GOVERSION 2>/dev/null)" \
            "$(cat "$KUBE_TENV_DIR/kube/build/go.mod" "$KUBE_TENV_DIR/kube/build/go.sum" | sha256sum | cut -c1-16)" ;;
        etcd) printf 'etcd %s go %s sum %s\n' "$KUBE_ETCD_VERSION" "$(go env GOVERSION 2>/dev/null)" \
            "$(cat "$KUBE_TENV_DIR/kube/etcd/go.mod" "$KUBE_TENV_DIR/kube/etcd/go.sum" | sha256sum | cut -c1-16)" ;;
        kwok) printf 'kwok %s\n' "$KUBE_KWOK_VERSION" ;;
        helm) printf 'helm %s k8s 1.%s\n' "$KUBE_HELM_VERSION" "$KUBE_HELM_K8S_MINOR" ;;
    esac
}

kube__built() {
    local name=$1 bin; shift
    local bindir
    bindir=$(kube__bindir)
    for bin in "$@"; do [[ -x $bindir/$bin ]] || return 1; done
    [[ -f $bindir/.$name.stamp && "$(cat "$bindir/.$name.stamp")" == "$(kube__stamp "$name")" ]]
}

# kube__go_build NAME LOG CMD...: run a go command, timing it; on failure show the log.
kube__go_build() {
    local name=$1 log=$2; shift 2
    local t0
    t0=$(tenv_now)
    tenv_log "kube: building $name (once per machine; log $log)"
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        tenv_die "kube: building $name failed (see $log)"
    fi
    kube__stamp "$name" >"$(kube__bindir)/.$name.stamp"
    tenv_log "kube: built $name in $(tenv_elapsed "$t0")s"
    printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$(tenv_elapsed "$t0")" >>"$NEXUS_TESTENV_CACHE/kube/build-times.txt"
}

kube__in_dir() { local d=$1; shift; (cd "$d" && "$@"); }

kube_install() {
    command -v go >/dev/null 2>&1 || tenv_die "kube: the go command is needed to build the control plane"
    local bindir logdir jobs ld v=$KUBE_K8S_VERSION minor
    bindir=$(kube__bindir)
    logdir=$NEXUS_TESTENV_CACHE/kube/logs
    tenv_mkdir "$bindir" "$logdir"
    jobs=${NEXUS_TESTENV_GO_JOBS:-2}
    # GOFLAGS from the caller (e.g. -mod=mod) must not change what we build.
    local -a goenv=(env "GOFLAGS=-mod=readonly -buildvcs=false" CGO_ENABLED=0)

    if ! kube__built kube kube-apiserver kube-controller-manager kube-scheduler; then
        minor=${v#v1.}; minor=${minor%%.*}
        ld="-s -w"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ld+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitVersion=$v -X $pkg.gitTreeState=clean"
            ld+=" -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        done
        kube__go_build kube "$logdir/build-kube.log" \
            kube__in_dir "$KUBE_TENV_DIR/kube/build" \
            "${goenv[@]}" go build -p "$jobs" -trimpath -ldflags "$ld" -o "$bindir/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler
    fi

    if ! kube__built etcd etcd; then
        kube__go_build etcd "$logdir/build-etcd.log" \
            kube__in_dir "$KUBE_TENV_DIR/kube/etcd" \
            "${goenv[@]}" go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$bindir/etcd" \
            go.etcd.io/etcd/server/v3
    fi

    if ! kube__built kwok kwok; then
        kube__go_build kwok "$logdir/build-kwok.log" \
            env GOFLAGS= CGO_ENABLED=0 GOBIN="$bindir" go install -p "$jobs" -trimpath \
            -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KUBE_KWOK_VERSION#v}" \
            "sigs.k8s.io/kwok/cmd/kwok@$KUBE_KWOK_VERSION"
    fi

    if ! kube__built helm helm; then
        ld="-s -w -X helm.sh/helm/v3/internal/version.version=$KUBE_HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
        for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
            ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$KUBE_HELM_K8S_MINOR"
        done
        kube__go_build helm "$logdir/build-helm.log" \
            env GOFLAGS= CGO_ENABLED=0 GOBIN="$bindir" go install -p "$jobs" -trimpath -ldflags "$ld" \
            "helm.sh/helm/v3/cmd/helm@$KUBE_HELM_VERSION"
    fi
}

# ---------------------------------------------------------------- certificates

# kube__ca DIR NAME CN: a self-signed CA (NAME.crt, NAME.key).
kube__ca() {
    local pki=$1 name=$2 cn=$3
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
    openssl req -x509 -new -key "$pki/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$pki/$name.crt" 2>/dev/null || tenv_die "kube: openssl could not make the CA $name"
}

# kube__cert DIR NAME SUBJECT [SAN [CA]]: a key and a certificate signed by CA (default ca).
kube__cert() {
    local pki=$1 name=$2 subj=$3 san=${4:-} ca=${5:-ca} ext
    ext=$pki/$name.ext
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n $san ]]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$san"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null ||
        tenv_die "kube: openssl could not sign $name"
    rm -f "$pki/$name.csr" "$ext"
}

kube__pki() {
    local pki
    pki=$(kube__rundir)/pki
    [[ -s $pki/ca.crt && -s $pki/admin.crt && -s $pki/apiserver.crt && -s $pki/sa.pub && -s $pki/front-proxy-client.crt ]] && return 0
    command -v openssl >/dev/null 2>&1 || tenv_die "kube: openssl is needed (apt-get install -y openssl)"
    rm -rf "$pki"
    tenv_mkdir "$pki"
    chmod 700 "$pki"
    kube__ca "$pki" ca nexus-testenv-ca
    # Front proxy (request-header authentication, used for aggregated API servers).
    kube__ca "$pki" front-proxy-ca nexus-testenv-front-proxy-ca
    kube__cert "$pki" front-proxy-client "/CN=front-proxy-client" "" front-proxy-ca
    kube__cert "$pki" apiserver "/CN=kube-apiserver" \
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:198.19.0.1"
    kube__cert "$pki" admin "/O=system:masters/CN=kubernetes-admin"
    # Service-account token signing key pair.
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
    openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null || tenv_die "kube: openssl could not make sa.pub"
}

kube__write_kubeconfig() {
    local port=$1 pki kc
    pki=$(kube__rundir)/pki
    kc=$(kube__kubeconfig)
    cat >"$kc.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nexus-test$(kube__var_suffix)
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$pki/admin.crt")
    client-key-data: $(base64 -w0 <"$pki/admin.key")
contexts:
- name: nexus-test$(kube__var_suffix)
  context:
    cluster: nexus-test$(kube__var_suffix)
    user: admin
current-context: nexus-test$(kube__var_suffix)
EOF
    chmod 600 "$kc.tmp"
    mv "$kc.tmp" "$kc"
}

# ---------------------------------------------------------------- helpers

# kube__free_port START: first port from START up that nobody listens on.
kube__free_port() {
    local p=$1
    while tenv_port_open 127.0.0.1 "$p"; do
        p=$((p + 1))
        [[ $p -lt 65000 ]] || tenv_die "kube: no free port found"
    done
    printf '%s\n' "$p"
}

# kube__api METHOD PATH [BODY]: call the API server as admin; prints the body.
kube__api() {
    local method=$1 path=$2 body=${3:-} pki port
    pki=$(kube__rundir)/pki
    port=$(kube__port)
    local -a args=(-sS --max-time 10 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" -X "$method")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    curl "${args[@]}" "https://127.0.0.1:$port$path"
}

kube__port() {
    local f
    f=$(kube__rundir)/ports
    if [[ -s $f ]]; then
        sed -n 's/^apiserver=//p' "$f"
    else
        local var
        var=$(kube__port_var)
        printf '%s\n' "${!var:-$(kube__base 6443)}"
    fi
}

# kube__wait WHAT TIMEOUT_SECONDS LOGS -- CMD...: poll CMD (quietly) until it succeeds.
kube__wait() {
    local what=$1 timeout=$2 logs=$3; shift 4
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            kube__fail "timed out after ${timeout}s waiting for $what" "$logs"
        fi
        kube__check_alive
        sleep 0.2
    done
}

KUBE_PROCS=(etcd apiserver controller-manager scheduler kwok)

# Every process started so far must still run.
kube__check_alive() {
    local p
    for p in "${KUBE_PROCS[@]}"; do
        [[ -f $(tenv_pidfile "$(kube__name)/$p") ]] || continue
        tenv_pid "$(kube__name)/$p" >/dev/null || kube__fail "$p exited" "$(kube__rundir)/$p/$p.log"
    done
}

kube__fail() {
    local msg=$1; shift
    local f
    tenv_log "$(kube__name): $msg"
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf '[testenv] ---- last lines of %s ----\n' "$f" >&2
        tail -n "${NEXUS_TESTENV_LOG_LINES:-40}" "$f" >&2
        printf '[testenv] ---- end of %s ----\n' "$f" >&2
    done
    kube_stop >/dev/null 2>&1 || true
    exit 1
}

kube__spawn() {
    local name=$1; shift
    local dir
    dir=$(kube__rundir)/$name
    tenv_mkdir "$dir"
    # The command line, for kube_start_part to start the process again exactly so.
    printf '%q ' "$@" >"$dir/$name.cmd"
    tenv_spawn "$(kube__name)/$name" "$dir/$name.log" "$@"
}

kube__healthy() { [[ $(kube__api GET "$1") == ok ]]; }

kube__nodes_ready() {
    local want=$1 n
    n=$(kube__api GET '/api/v1/nodes?labelSelector=type%3Dkwok' | kube__count_ready) || return 1
    [[ $n -ge $want ]]
}

kube__sa_ready() {
    kube__api GET /api/v1/namespaces/default/serviceaccounts/default | grep -q '"kind": *"ServiceAccount"'
}

# Nodes (JSON list on stdin) that are Ready and carry no NoSchedule taint.
kube__count_ready() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for n in d.get("items", [])
          if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
          and not any(t.get("effect") == "NoSchedule" for t in n.get("spec", {}).get("taints", []) or [])))'
}

kube__node_json() {
    cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$1",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"type": "kwok", "kubernetes.io/hostname": "$1", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent", "node-role.kubernetes.io/agent": ""}}}
EOF
}

# ---------------------------------------------------------------- start / stop

kube_start() {
    local t0 dir bin pki timeout nodes i
    t0=$(tenv_now)
    dir=$(kube__rundir)
    bin=$(kube__bindir)
    pki=$dir/pki
    timeout=${NEXUS_TESTENV_KUBE_TIMEOUT:-${NEXUS_TESTENV_TIMEOUT:-120}}
    nodes=${NEXUS_TESTENV_KUBE_NODES:-2}
    if ! kube__built kube kube-apiserver kube-controller-manager kube-scheduler ||
        ! kube__built etcd etcd || ! kube__built kwok kwok; then
        tenv_die "kube: binaries missing or outdated in $bin (run: scripts/testenv install kube)"
    fi
    command -v curl >/dev/null 2>&1 || tenv_die "kube: curl is needed"
    # Leftovers of an earlier run (e.g. only some processes alive) are stopped first.
    kube_stop >/dev/null 2>&1 || true
    tenv_mkdir "$dir"

    # Ports.
    local api_port etcd_port peer_port kcm_port sched_port kubelet_port
    local port_var
    port_var=$(kube__port_var)
    if [[ -n ${!port_var:-} ]]; then
        api_port=${!port_var}
        tenv_require_free_port "$(kube__name)" "$api_port"
    else
        api_port=$(kube__free_port "$(kube__base 6443)")
    fi
    etcd_port=$(kube__free_port "$(kube__base 23790)")
    peer_port=$(kube__free_port $((etcd_port + 1)))
    kcm_port=$(kube__free_port "$(kube__base 10257)")
    sched_port=$(kube__free_port $((kcm_port + 2)))
    kubelet_port=$(kube__free_port "$(kube__base 10250)")
    [[ $kubelet_port == "$api_port" || $kubelet_port == "$kcm_port" || $kubelet_port == "$sched_port" ]] &&
        kubelet_port=$(kube__free_port "$(kube__base 20250)")
    printf 'apiserver=%s\netcd=%s\netcd_peer=%s\ncontroller_manager=%s\nscheduler=%s\nkwok=%s\n' \
        "$api_port" "$etcd_port" "$peer_port" "$kcm_port" "$sched_port" "$kubelet_port" >"$dir/ports"

    kube__pki
    kube__write_kubeconfig "$api_port"
    local kc
    kc=$(kube__kubeconfig)

    # etcd: fresh data every start (the tests want an empty cluster).
    rm -rf "$dir/etcd"
    tenv_mkdir "$dir/etcd"
    kube__spawn etcd "$bin/etcd" \
        --name=nexus-test --data-dir="$dir/etcd/data" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="nexus-test=http://127.0.0.1:$peer_port" --initial-cluster-state=new \
        --unsafe-no-fsync=true --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
        --log-level=warn
    kube__wait etcd "$timeout" "$dir/etcd/etcd.log" -- \
        bash -c "curl -sf --max-time 2 http://127.0.0.1:$etcd_port/health | grep -q '\"health\":\"true\"'"

    kube__spawn apiserver "$bin/kube-apiserver" \
        --bind-address=127.0.0.1 --secure-port="$api_port" --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --cert-dir="$dir/apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=198.19.0.0/16 \
        --authorization-mode=Node,RBAC \
        --kubelet-preferred-address-types=InternalIP \
        --allow-privileged=true \
        --profiling=false \
        --v=1
    kube__wait "kube-apiserver /readyz" "$timeout" "$dir/apiserver/apiserver.log" -- kube__healthy /readyz

    kube__spawn controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$dir/controller-manager" \
        --leader-elect=false --controllers='*' \
        --use-service-account-credentials=false \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --profiling=false \
        --v=1
    kube__spawn scheduler "$bin/kube-scheduler" \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$dir/scheduler" \
        --leader-elect=false --profiling=false \
        --v=1
    tenv_mkdir "$dir/kwok"
    # Container logs (kubectl logs / read_namespaced_pod_log) of every pod: this
    # file, in the CRI log format kwok parses ("<time> stdout F <line>").
    printf '%s stdout F %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" \
        "${NEXUS_TESTENV_KUBE_POD_LOG:-kwok: simulated container output}" >"$dir/kwok/container.log"
    {
        cat "$KUBE_TENV_DIR/kube/kwok.yaml"
        printf -- '---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: nexus-logs\n'
        printf 'spec:\n  logs:\n  - logsFile: %s\n    follow: false\n' "$dir/kwok/container.log"
    } >"$dir/kwok/kwok.yaml"
    # Node IP 127.0.0.1: the API server reaches the "kubelet" (kwok's server, for
    # logs) on loopback. Pod IPs come from 198.18.0.0/16 (a range reserved for
    # network tests); they only appear in pod status, nothing connects to them.
    kube__spawn kwok "$bin/kwok" \
        --kubeconfig="$kc" --config="$dir/kwok/kwok.yaml" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-lease-duration-seconds=40 \
        --node-ip=127.0.0.1 --cidr=198.18.0.1/16 \
        --server-address="127.0.0.1:$kubelet_port" --node-port="$kubelet_port"

    kube__wait "kube-controller-manager /healthz" "$timeout" "$dir/controller-manager/controller-manager.log" -- \
        bash -c "curl -skf --max-time 2 https://127.0.0.1:$kcm_port/healthz | grep -qx ok"
    kube__wait "kube-scheduler /healthz" "$timeout" "$dir/scheduler/scheduler.log" -- \
        bash -c "curl -skf --max-time 2 https://127.0.0.1:$sched_port/healthz | grep -qx ok"

    for ((i = 0; i < nodes; i++)); do
        kube__api POST /api/v1/nodes "$(kube__node_json "kwok-node-$i")" >"$dir/kwok/node-$i.json" ||
            kube__fail "could not create node kwok-node-$i" "$dir/kwok/node-$i.json"
    done
    kube__wait "$nodes kwok nodes Ready" "$timeout" "$dir/kwok/kwok.log" -- kube__nodes_ready "$nodes"
    kube__wait "service account default/default" "$timeout" "$dir/controller-manager/controller-manager.log" -- \
        kube__sa_ready

    tenv_write_env "$(kube__name)" "NEXUS_TEST_KUBECONFIG$(kube__var_suffix)=$kc" "NEXUS_TEST_HELM=$bin/helm"
    tenv_log "$(kube__name): ready, Kubernetes $KUBE_K8S_VERSION on https://127.0.0.1:$api_port, $nodes kwok nodes, in $(tenv_elapsed "$t0")s (kubeconfig $kc)"
}

kube_stop() {
    local rc=0 i p
    for ((i = ${#KUBE_PROCS[@]} - 1; i >= 0; i--)); do
        p=${KUBE_PROCS[i]}
        [[ -f $(tenv_pidfile "$(kube__name)/$p") ]] || continue
        tenv_stop_pid "$(kube__name)/$p" 30 || rc=1
    done
    return $rc
}

# kube_stop_part PART / kube_start_part PART: one process of a running control plane
# (e.g. the API server: a shard whose API server goes down while its etcd, and so its
# objects, stay) stopped by SIGTERM, and started again with the same command line.
kube_stop_part() {
    local part=$1
    kube__known_part "$part"
    tenv_pid "$(kube__name)/$part" >/dev/null || tenv_die "$(kube__name)/$part is not running"
    tenv_stop_pid "$(kube__name)/$part" 30
}

kube_start_part() {
    local part=$1 dir timeout
    kube__known_part "$part"
    dir=$(kube__rundir)/$part
    timeout=${NEXUS_TESTENV_KUBE_TIMEOUT:-${NEXUS_TESTENV_TIMEOUT:-120}}
    if tenv_pid "$(kube__name)/$part" >/dev/null; then
        tenv_log "$(kube__name)/$part: already running"
        return 0
    fi
    [[ -s $dir/$part.cmd ]] || tenv_die "$(kube__name)/$part was never started (no $dir/$part.cmd)"
    local -a cmd
    eval "cmd=($(<"$dir/$part.cmd"))"
    [[ -s $dir/$part.log ]] && mv -f "$dir/$part.log" "$dir/$part.log.1"
    kube__spawn "$part" "${cmd[@]}"
    if [[ $part == apiserver ]]; then
        kube__wait "kube-apiserver /readyz" "$timeout" "$dir/$part.log" -- kube__healthy /readyz
    else
        sleep 1
        kube__check_alive
    fi
    tenv_log "$(kube__name)/$part: started again"
}

kube__known_part() {
    local p
    for p in "${KUBE_PROCS[@]}"; do [[ $p == "$1" ]] && return 0; done
    tenv_die "$(kube__name): no process '$1' (known: ${KUBE_PROCS[*]})"
}

kube_status() {
    local p pid rc=0 msg=""
    for p in "${KUBE_PROCS[@]}"; do
        if pid=$(tenv_pid "$(kube__name)/$p"); then
            msg+=" $p=$pid"
        else
            msg+=" $p=stopped"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]] && ! kube__healthy /readyz >/dev/null 2>&1; then
        msg+=" (apiserver not ready)"
        rc=1
    fi
    if [[ $rc -eq 0 ]]; then
        echo "$(kube__name): running on https://127.0.0.1:$(kube__port),$msg"
    else
        echo "$(kube__name): not running:$msg"
    fi
    return $rc
}

kube_env() {
    printf 'export NEXUS_TEST_KUBECONFIG%s=%q\n' "$(kube__var_suffix)" "$(kube__kubeconfig)"
    printf 'export NEXUS_TEST_HELM=%q\n' "$(kube__bindir)/helm"
}

kube_clean() {
    rm -rf "${NEXUS_TESTENV_RUN:?}/$(kube__name)" "$(tenv_envfile "$(kube__name)")"
    tenv_log "$(kube__name): run folder removed (binaries kept in $(kube__bindir))"
}

kube_logs() {
    local p
    for p in "${KUBE_PROCS[@]}"; do echo "$(kube__rundir)/$p/$p.log"; done
    echo "$NEXUS_TESTENV_CACHE/kube/logs"
}
