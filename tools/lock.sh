#!/usr/bin/env bash
# The lock: requirements.txt pins every package for every supported platform, with
# markers, resolved by uv from pyproject.toml's direct dependencies (plus the test extra).
#
#   tools/lock.sh write   regenerate requirements.txt (`make lock`); versions already in the
#                         lock stay where they are unless LOCK_FLAGS says otherwise, e.g.
#                         LOCK_FLAGS=--upgrade-package=timm or LOCK_FLAGS=--upgrade
#   tools/lock.sh check   (`make check-lock`, CI) fail if a pin lacks its hashes or
#                         requirements.txt is stale, then resolve it for each platform and
#                         Python below, wheels only, and fail if that needs any package or
#                         version the lock lacks. Nothing is installed.
#   tools/lock.sh hashes [FILE]
#                         only the first of those checks, offline: fail if any pin in FILE
#                         (default requirements.txt) has no --hash=sha256:... line.
#
# Every pin carries the sha256 of every file PyPI holds for that version (all platforms and
# Pythons: uv's --generate-hashes), so `make setup` can install with --require-hashes
# (tools/install.sh) and refuse a file that differs from the one locked. `check` regenerates
# the hashes from PyPI too, so a wheel published later for a locked version (a new platform or
# Python) shows up as a stale lock. tools/uv-requirements.txt locks uv itself the same way
# (the Makefile installs uv from it, hash-checked, and reads UV_VERSION from it); write and
# check treat it like the main lock, and LOCK_FLAGS=--upgrade-package=uv moves it.
#
# UV names the uv executable (the Makefile installs a pinned one).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
LOCK=requirements.txt
UV_LOCK=tools/uv-requirements.txt
# uv's targets: Linux x86-64 (glibc 2.28+; the same lock with or without a GPU), macOS on
# Apple silicon, Windows x86-64.
PLATFORMS=(x86_64-manylinux_2_28 aarch64-apple-darwin x86_64-pc-windows-msvc)
PYTHONS=(3.11 3.12 3.13 3.14)
# torch's macOS wheels are built for macOS 14 and later; uv assumes 13 unless told.
export MACOSX_DEPLOYMENT_TARGET=14.0
# Resolving for a Python this machine lacks needs no interpreter of that version, but uv tries
# to download one first, and where GitHub is out of reach it retries for ~10 s each time
# (a cold `make check-lock` took 86 s with the tries, 29 s without).
export UV_PYTHON_DOWNLOADS=never
# Pure-Python packages published only as source (they build anywhere); every other
# package must come as a wheel for each platform, so no one compiles anything.
SOURCE_ONLY=antlr4-python3-runtime

compile_lock() {  # $1: output file; keeps the versions it already holds
    # shellcheck disable=SC2086  # LOCK_FLAGS is a list of flags
    "$UV" pip compile pyproject.toml --extra test --universal --python-version 3.11 \
        --generate-hashes --custom-compile-command "make lock" --quiet ${LOCK_FLAGS:-} -o "$1"
}

compile_uv_lock() {  # $1: output file; keeps the uv version it already holds
    # shellcheck disable=SC2086  # LOCK_FLAGS is a list of flags
    echo uv | "$UV" pip compile - --universal --python-version 3.11 --generate-hashes --no-annotate \
        --custom-compile-command "make lock" --quiet ${LOCK_FLAGS:-} -o "$1"
}

check_hashes() {  # $1: a requirements file; one line naming the pins without a sha256 hash
    # A pin is a line starting with a name; its --hash options follow on that line or on the
    # backslash-continued lines after it, before the next pin or its "# via" comments.
    awk -v lock="$1" '
        function close_pin() { if (pin != "" && !hashed) missing[++n] = pin; pin = "" }
        function has_hash(   i, digest) {  # 64 hex digits (no {64}: mawk lacks intervals)
            for (i = 1; i <= NF; i++)
                if ($i ~ /^--hash=sha256:/) {
                    digest = substr($i, 15)
                    if (length(digest) == 64 && digest !~ /[^0-9a-f]/) return 1
                }
            return 0
        }
        /^[A-Za-z0-9]/ { close_pin(); pin = $1; sub(/;.*/, "", pin); hashed = has_hash(); next }
        pin != "" && /^[ \t]+--hash=/ { if (has_hash()) hashed = 1; next }
        /^[ \t]*#/ || /^[ \t]*$/ { close_pin() }
        END {
            close_pin()
            if (n == 0) exit 0
            names = missing[1]
            for (i = 2; i <= n && i <= 3; i++) names = names ", " missing[i]
            if (n > 3) names = names " and " n - 3 " more"
            printf "error: %s: %s %s no --hash=sha256: run `make lock` to write the hashes, and commit %s\n", \
                lock, names, (n == 1 ? "has" : "have"), lock > "/dev/stderr"
            exit 1
        }' "$1"
}

pins() {  # name==version of every requirement line, names normalised, markers and hashes dropped
    grep -E '^[A-Za-z0-9]' "$1" | sed -E 's/[ ;\].*//' |
        awk -F'==' '{ name = tolower($1); gsub(/[-_.]+/, "-", name); print name "==" $2 }' | sort -u
}

case "${1:-}" in
write)
    compile_lock "$LOCK"
    echo "$LOCK: $(pins "$LOCK" | wc -l) packages pinned for every platform"
    compile_uv_lock "$UV_LOCK"
    echo "$UV_LOCK: $(pins "$UV_LOCK")"
    ;;
hashes)
    check_hashes "${2:-$LOCK}"
    echo "${2:-$LOCK}: every pin carries its sha256 hashes"
    ;;
check)
    # offline and first: a lock without hashes is the one mistake named in one line
    check_hashes "$LOCK"
    check_hashes "$UV_LOCK"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp "$LOCK" "$tmp/lock.txt"
    compile_lock "$tmp/lock.txt"
    if ! diff -u "$LOCK" "$tmp/lock.txt"; then
        echo "error: $LOCK does not match pyproject.toml: run \`make lock\` and commit $LOCK" >&2
        exit 1
    fi
    echo "$LOCK is up to date with pyproject.toml ($(pins "$LOCK" | wc -l) packages)"
    cp "$UV_LOCK" "$tmp/uv.txt"
    compile_uv_lock "$tmp/uv.txt"
    if ! diff -u "$UV_LOCK" "$tmp/uv.txt"; then
        echo "error: $UV_LOCK is stale (PyPI's files for $(pins "$UV_LOCK") differ): run \`make lock\` and commit $UV_LOCK" >&2
        exit 1
    fi
    echo "$UV_LOCK is up to date ($(pins "$UV_LOCK"))"
    # one resolution per platform and Python, side by side (they wait on the index, not the CPU)
    for platform in "${PLATFORMS[@]}"; do
        for python in "${PYTHONS[@]}"; do
            out="$tmp/$platform-$python"
            resolve=("$UV" pip compile "$LOCK" --python-platform "$platform" --python-version "$python"
                     --only-binary :all: --no-binary "$SOURCE_ONLY" --no-header --no-annotate --quiet -o "$out.txt")
            # whatever uv's cache already holds is not asked for again; the network only fills the rest
            if { "${resolve[@]}" --offline 2>/dev/null || "${resolve[@]}"; } 2>"$out.err"; then
                echo ok >"$out.status"
            else
                echo failed >"$out.status"
            fi &
        done
    done
    wait
    failed=0
    for platform in "${PLATFORMS[@]}"; do
        for python in "${PYTHONS[@]}"; do
            out="$tmp/$platform-$python"
            if [ "$(cat "$out.status")" != ok ]; then
                echo "error: the lock does not resolve on $platform, Python $python:" >&2
                cat "$out.err" >&2
                failed=1
                continue
            fi
            missing=$(comm -13 <(pins "$LOCK") <(pins "$out.txt"))
            if [ -n "$missing" ]; then
                echo "error: on $platform, Python $python the lock lacks:" $missing >&2
                failed=1
                continue
            fi
            echo "$platform, Python $python: resolves to $(pins "$out.txt" | wc -l) locked packages, wheels only (but $SOURCE_ONLY)"
        done
    done
    exit $failed
    ;;
*)
    echo "usage: $0 write|check|hashes [FILE]" >&2
    exit 2
    ;;
esac
