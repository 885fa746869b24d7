# shellcheck shell=bash
# Component "promtool": Prometheus's promtool, built from its Go module (the
# module proxy is reachable; release downloads are not), for `promtool check
# metrics` on nexus's /metrics. A tool, not a server: start/stop do nothing,
# status says whether it is built. Sourced by scripts/testenv.
#
# Settings (environment):
#   NEXUS_TESTENV_PROMTOOL_VERSION   github.com/prometheus/prometheus module
#                                    version (default v0.316.0, Prometheus 3.x)

promtool__version() { printf '%s\n' "${NEXUS_TESTENV_PROMTOOL_VERSION:-v0.316.0}"; }
promtool__dir() { printf '%s\n' "$NEXUS_TESTENV_CACHE/promtool/$(promtool__version)"; }
promtool__bin() { printf '%s\n' "$(promtool__dir)/promtool"; }

promtool_install() {
    local bin dir version started
    bin=$(promtool__bin)
    [[ -x $bin ]] && return 0
    command -v go >/dev/null 2>&1 || tenv_die "promtool: needs Go (the go command) to build"
    dir=$(promtool__dir)
    version=$(promtool__version)
    tenv_mkdir "$dir"
    started=$(tenv_now)
    tenv_log "promtool: building github.com/prometheus/prometheus/cmd/promtool@$version (a few minutes, once)"
    env GOFLAGS= CGO_ENABLED=0 GOBIN="$dir" go install -trimpath -ldflags "-s -w" \
        "github.com/prometheus/prometheus/cmd/promtool@$version" >"$dir/build.log" 2>&1 || {
        tail -n 30 "$dir/build.log" >&2
        tenv_die "promtool: go install failed (log: $dir/build.log)"
    }
    [[ -x $bin ]] || tenv_die "promtool: $bin missing after go install"
    tenv_log "promtool: built in $(tenv_elapsed "$started")s"
}

promtool_start() { promtool_install; }
promtool_stop() { :; }
promtool_status() {
    if [[ -x $(promtool__bin) ]]; then
        echo "promtool: built, $(promtool__bin)"
    else
        echo "promtool: not built"
        return 1
    fi
}
promtool_env() { printf 'export NEXUS_TEST_PROMTOOL=%q\n' "$(promtool__bin)"; }
