# shellcheck shell=bash
# Component "browser": Debian's chromium, driven headless by Playwright for Python
# (the `playwright` package of the test extra, pointed at this browser: no browser
# download). A tool, not a server: start/stop do nothing, status says whether it is
# installed. Sourced by scripts/testenv.
#
# Settings (environment):
#   NEXUS_TESTENV_CHROMIUM   the browser binary (default /usr/bin/chromium)

browser__bin() { printf '%s\n' "${NEXUS_TESTENV_CHROMIUM:-/usr/bin/chromium}"; }
browser__dir() { printf '%s\n' "$NEXUS_TESTENV_CACHE/browser"; }

browser_install() {
    local bin started
    bin=$(browser__bin)
    [[ -x $bin ]] && return 0
    [[ $bin == /usr/bin/chromium ]] || tenv_die "browser: $bin is not executable"
    command -v apt-get >/dev/null 2>&1 || tenv_die "browser: needs apt-get to install Debian's chromium"
    tenv_mkdir "$(browser__dir)"
    started=$(tenv_now)
    tenv_log "browser: installing chromium from Debian's packages"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; } \
        >"$(browser__dir)/apt.log" 2>&1 ||
        tenv_die "browser: apt-get install chromium failed (log: $(browser__dir)/apt.log)"
    [[ -x $bin ]] || tenv_die "browser: $bin missing after apt-get install"
    tenv_log "browser: chromium installed in $(tenv_elapsed "$started")s"
}

browser_start() { browser_install; }
browser_stop() { :; }
browser_status() {
    if [[ -x $(browser__bin) ]]; then
        echo "browser: $("$(browser__bin)" --version 2>/dev/null || echo "$(browser__bin)")"
    else
        echo "browser: not installed"
        return 1
    fi
}
browser_env() { printf 'export NEXUS_TEST_CHROMIUM=%q\n' "$(browser__bin)"; }
