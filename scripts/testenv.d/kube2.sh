# shellcheck shell=bash
# Component "kube2" of scripts/testenv: a second, independent Kubernetes control
# plane on loopback — its own etcd, kube-apiserver (its own CA and service-account
# keys), controller-manager, scheduler and KWOK nodes — for the multi-cluster tests
# (the controller role syncing into shards, a supervisor per shard). Same binaries
# as "kube" (built once, shared); run folder $NEXUS_TESTENV_RUN/kube2; ports searched
# from 100 above kube's (6543, 23890, ...).
#
# Exports NEXUS_TEST_KUBECONFIG_2 (and NEXUS_TEST_HELM, the same binary as kube's).
#
# Settings (environment): NEXUS_TEST_KUBE2_PORT pins its API server's port; the
# NEXUS_TESTENV_KUBE_* settings of kube.sh apply to both.

KUBE2_TENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=kube.sh
declare -F kube_start >/dev/null || source "$KUBE2_TENV_DIR/kube.sh"

kube2_install() { kube_install; }
kube2_start() { KUBE_NAME=kube2 kube_start; }
kube2_stop() { KUBE_NAME=kube2 kube_stop; }
kube2_status() { KUBE_NAME=kube2 kube_status; }
kube2_env() { KUBE_NAME=kube2 kube_env; }
kube2_clean() { KUBE_NAME=kube2 kube_clean; }
kube2_logs() { KUBE_NAME=kube2 kube_logs; }
kube2_stop_part() { KUBE_NAME=kube2 kube_stop_part "$@"; }
kube2_start_part() { KUBE_NAME=kube2 kube_start_part "$@"; }
