#!/bin/bash
# Kernel style checks: checkpatch --strict (from Debian's linux-source, run
# with --no-tree) over every C source and header of the modules (the objects
# of each Kbuild file in the tree, the headers beside them), the uapi headers
# and the selftests.  Prints the findings; exits nonzero when there are any.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CP=$ROOT/.cache/linux-src-6.1/scripts/checkpatch.pl
[[ -x $CP || -f $CP ]] || { echo "lint: $CP missing (run tests/setup/setup.sh)" >&2; exit 1; }
# shellcheck source=tests/setup/kbuild-lib.sh
source "$ROOT/tests/setup/kbuild-lib.sh"
cd "$ROOT"
shopt -s nullglob

# Headers that need a check switched off, and why:
declare -A ignore=(
    # compat.h exists to hold the version checks checkpatch warns about.
    [compat.h]="LINUX_VERSION_CODE,CONSTANT_COMPARISON"
    # balloon_hp.h includes virtio_balloon_hp.h, whose name contains its own.
    [balloon_hp.h]="EMBEDDED_FILENAME"
)
files=()
while read -r dir; do
    for f in $(kbuild_sources "$dir") "$dir"/*.h; do
        f=${f#"$dir"/}
        [[ $dir == . ]] || f=$dir/$f
        [[ -n ${ignore[$f]:-} ]] || files+=("$f")
    done
done < <(find . -path ./.cache -prune -o -name Kbuild -printf '%h\n' | sed 's|^\./||' | sort)
files+=(uapi/linux/*.h selftests/virtio_balloon_hp/*.[ch])

# CAMELCASE: the only CamelCase names are the kernel's own (__SetPageOffline).
opts=(--strict --no-tree --terse --show-types --ignore CAMELCASE)
rc=0
perl "$CP" "${opts[@]}" -f "${files[@]}" || rc=1
for f in "${!ignore[@]}"; do
    perl "$CP" "${opts[@]}" --ignore "${ignore[$f]}" -f "$f" || rc=1
done
exit $rc
