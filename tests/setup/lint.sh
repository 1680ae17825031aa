#!/bin/bash
# Kernel style checks: checkpatch --strict (from Debian's linux-source, run
# with --no-tree) over every C source and header of the module and the
# selftests.  Prints the findings; exits nonzero when there are any.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CP=$ROOT/.cache/linux-src-6.1/scripts/checkpatch.pl
[[ -x $CP || -f $CP ]] || { echo "lint: $CP missing (run tests/setup/setup.sh)" >&2; exit 1; }
cd "$ROOT"
files=(virtio_balloon_hp.c uapi/linux/virtio_balloon_hp.h
       selftests/virtio_balloon_hp/*.[ch] selftests/virtio_balloon_hp/dma/*.c
       bench/floor/*.c)
# CAMELCASE: the only CamelCase names are the kernel's own (__SetPageOffline).
opts=(--strict --no-tree --terse --show-types --ignore CAMELCASE)
rc=0
perl "$CP" "${opts[@]}" -f "${files[@]}" || rc=1
# compat.h exists to hold the version checks checkpatch warns about.
perl "$CP" "${opts[@]}" --ignore LINUX_VERSION_CODE,CONSTANT_COMPARISON -f compat.h || rc=1
# balloon_hp.h includes virtio_balloon_hp.h, whose name contains its own.
perl "$CP" "${opts[@]}" --ignore EMBEDDED_FILENAME -f balloon_hp.h || rc=1
exit $rc
