# shellcheck shell=bash
# Component "sdk": the official Python SDK (PyPI nexus-client-sdk, which wraps the Go
# SDK as a shared library) in a venv of its own, for tests/e2e/test_official_sdk.py.
# A tool, not a server: install/start make it present, stop does nothing, status says
# whether it is installed. Sourced by scripts/testenv.
#
# The SDK's dependency closure is large (adapta with its AWS, storage and datadog
# extras, pandas, pyarrow, polars, deltalake, ...) and pip alone spends tens of minutes
# resolving it, so sdk-requirements.txt pins every package with its hashes and pip
# installs exactly that list (--no-deps), resolving nothing. The venv is kept while the
# list and the interpreter stay the same (a stamp holds the list's sha256 and the
# interpreter's version); a changed list builds a new venv.
#
# Settings (environment):
#   NEXUS_TESTENV_SDK_BASE_PYTHON   interpreter the venv is made from (default python3,
#                                   the one the nexus venv uses; the list is resolved for
#                                   CPython 3.11)

sdk__dir() { printf '%s\n' "$NEXUS_TESTENV_CACHE/sdk"; }
sdk__venv() { printf '%s\n' "$(sdk__dir)/venv"; }
sdk__python() { printf '%s\n' "$(sdk__venv)/bin/python"; }
sdk__requirements() { printf '%s\n' "$TENV_DIR/sdk-requirements.txt"; }

# What the installed venv must match: the list's hash and the base interpreter's version.
sdk__want() {
    local base=${NEXUS_TESTENV_SDK_BASE_PYTHON:-python3}
    printf '%s %s\n' "$(sha256sum "$(sdk__requirements)" | cut -d' ' -f1)" \
        "$("$base" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo none)"
}
sdk__installed() {
    local stamp
    stamp="$(sdk__dir)/installed"
    [[ -x $(sdk__python) && -s $stamp && $(<"$stamp") == "$(sdk__want)" ]]
}

sdk_install() {
    local base=${NEXUS_TESTENV_SDK_BASE_PYTHON:-python3} dir venv log started
    sdk__installed && return 0
    dir=$(sdk__dir)
    venv=$(sdk__venv)
    log="$dir/install.log"
    command -v "$base" >/dev/null 2>&1 || tenv_die "sdk: no $base to make the SDK's venv with"
    "$base" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)' ||
        tenv_die "sdk: nexus-client-sdk needs Python 3.11 to 3.14; $base is $("$base" --version 2>&1)"
    tenv_mkdir "$dir"
    rm -f "$dir/installed"
    rm -rf "$venv"
    started=$(tenv_now)
    tenv_log "sdk: installing nexus-client-sdk and its pinned dependencies into $venv"
    {
        "$base" -m venv "$venv" &&
            # --no-compile: byte-compiling all of pandas, pyarrow, polars ... doubled the
            # install's time; Python compiles the few modules the SDK imports when it does
            "$venv/bin/python" -m pip install --no-deps --require-hashes --only-binary :all: \
                --no-compile --disable-pip-version-check --no-input -r "$(sdk__requirements)" &&
            "$venv/bin/python" -m pip check --disable-pip-version-check &&
            # the Go shared library loads, and the clients the test uses import
            "$venv/bin/python" -c 'from nexus_client_sdk.clients.cwrapper import import_cgo_library
import_cgo_library()
from nexus_client_sdk.clients.nexus_scheduler_client import NexusSchedulerClient
from nexus_client_sdk.nexus.async_extensions.nexus_receiver_async_client import NexusReceiverAsyncClient'
    } >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        tenv_die "sdk: install failed (log: $log)"
    }
    sdk__want >"$dir/installed"
    tenv_log "sdk: nexus-client-sdk $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("nexus-client-sdk"))') installed in $(tenv_elapsed "$started")s"
}

sdk_start() { sdk_install; }
sdk_stop() { :; }
sdk_status() {
    if sdk__installed; then
        echo "sdk: nexus-client-sdk in $(sdk__venv)"
    else
        echo "sdk: not installed (or sdk-requirements.txt changed since)"
        return 1
    fi
}
sdk_env() { printf 'export NEXUS_TEST_SDK_PYTHON=%q\n' "$(sdk__python)"; }
