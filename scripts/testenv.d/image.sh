# shellcheck shell=bash
# Component "image": what building nexus's Containerfile needs here. A tool, not a
# server: podman (with runc) from Debian's packages, and a local base image, since
# no image registry is reachable: a debootstrap of Debian trixie (minbase, python3,
# python3-venv, ca-certificates) laid out like the official python image (a venv at
# /usr/local gives /usr/local/bin/python and pip), trusting this machine's CA bundle
# (pip and cargo inside the build reach their registries through it). The rootfs is
# cached as a tar and imported into podman's storage when missing. start/stop do
# nothing. Sourced by scripts/testenv.
#
# Settings (environment):
#   NEXUS_TESTENV_IMAGE_SUITE    Debian suite of the base (default trixie)
#   NEXUS_TESTENV_IMAGE_MIRROR   (default http://deb.debian.org/debian)
#
# In this sandbox podman needs --runtime runc (crun: "cgroups in hybrid mode not
# supported"), nofile/nproc ulimits lowered below the machine's (runc: "error
# setting rlimit type 7: operation not permitted"), and --network host, the
# simplest way for a build step to reach the package registries:
# NEXUS_TEST_PODMAN and NEXUS_TEST_PODMAN_RUN_FLAGS carry those flags.

image__suite() { printf '%s\n' "${NEXUS_TESTENV_IMAGE_SUITE:-trixie}"; }
image__dir() { printf '%s\n' "$NEXUS_TESTENV_CACHE/image"; }
image__tar() { printf '%s\n' "$(image__dir)/base-$(image__suite).tar"; }
image__name() { printf '%s\n' "localhost/nexus-test-base:$(image__suite)"; }
image__ulimits() { printf '%s\n' "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096"; }

image__packages() {
    local missing=()
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]] || missing+=(runc)
    command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    tenv_log "image: installing ${missing[*]} from Debian's packages"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >"$(image__dir)/apt.log" 2>&1 ||
        tenv_die "image: apt-get install ${missing[*]} failed (log: $(image__dir)/apt.log)"
}

image__rootfs_tar() {
    local dir root tar started
    dir=$(image__dir)
    tar=$(image__tar)
    [[ -s $tar ]] && return 0
    root="$dir/rootfs"
    started=$(tenv_now)
    tenv_log "image: debootstrap $(image__suite) into $root (about a minute)"
    rm -rf "$root"
    PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates "$(image__suite)" "$root" \
        "${NEXUS_TESTENV_IMAGE_MIRROR:-http://deb.debian.org/debian}" >"$dir/debootstrap.log" 2>&1 ||
        tenv_die "image: debootstrap failed (log: $dir/debootstrap.log)"
    tenv_mkdir "$root/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/nexus-host-bundle.crt"
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || tenv_die "image: update-ca-certificates failed"
    chroot "$root" python3 -m venv /usr/local || tenv_die "image: python3 -m venv /usr/local failed"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar" || tenv_die "image: cannot write $tar"
    rm -rf "$root"
    tenv_log "image: base rootfs ready in $(tenv_elapsed "$started")s"
}

image_install() {
    tenv_mkdir "$(image__dir)"
    image__packages
    image__rootfs_tar
    podman image exists "$(image__name)" && return 0
    podman import --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$(image__tar)" "$(image__name)" >/dev/null ||
        tenv_die "image: podman import of $(image__tar) failed"
    tenv_log "image: imported $(image__name)"
}

image_start() { image_install; }
image_stop() { :; }
image_status() {
    if command -v podman >/dev/null 2>&1 && podman image exists "$(image__name)"; then
        echo "image: base $(image__name) ready"
    else
        echo "image: base $(image__name) missing"
        return 1
    fi
}
image_clean() { podman rmi -f "$(image__name)" >/dev/null 2>&1 || true; rm -f "$(image__tar)"; }
image_env() {
    printf 'export NEXUS_TEST_IMAGE_BASE=%q\n' "$(image__name)"
    printf 'export NEXUS_TEST_PODMAN=%q\n' "podman --runtime runc"
    printf 'export NEXUS_TEST_PODMAN_RUN_FLAGS=%q\n' "--network host $(image__ulimits)"
}
