//go:build tools

// Package tools pins the etcd server command built by kube.sh (kube_install).
package tools

import _ "go.etcd.io/etcd/server/v3"
