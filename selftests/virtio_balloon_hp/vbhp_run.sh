#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# vbhp_run.sh PROGRAM... - run virtio_balloon_hp selftests without a kernel
# tree (make run_tests, or an installed copy with no argument: the test
# programs listed in vbhp_tests.list beside this script).  Prints TAP 13 as the kernel's kselftest
# runner does: each program's own TAP indented as "# " lines, then
# "ok N selftests: virtio_balloon_hp: PROG [# SKIP]" or "not ok N ...".
# Exit code 4 (KSFT_SKIP) counts as a skip; the timeout in "settings"
# beside this script bounds each program.  Like the kernel's runner, the
# arguments of PROG come from KSELFTEST_<PROG>_ARGS (upper case).  The last
# line is "# Totals: pass:P fail:F xfail:0 xpass:0 skip:S error:0"; the
# exit code is 0 when no test failed.
# (POSIX sh: also runs under busybox.)

DIR=$(cd "$(dirname "$0")" && pwd)
COLLECTION=virtio_balloon_hp

timeout_s=45
if [ -r "$DIR/settings" ]; then
	t=$(sed -n 's/^timeout=\([0-9][0-9]*\)$/\1/p' "$DIR/settings")
	[ -n "$t" ] && timeout_s=$t
fi
if [ $# -eq 0 ]; then
	# an installed copy: make install wrote the list of test programs
	[ -r "$DIR/vbhp_tests.list" ] || { echo "$0: no $DIR/vbhp_tests.list" >&2; exit 1; }
	for t in $(cat "$DIR/vbhp_tests.list"); do
		set -- "$@" "$DIR/$t"
	done
fi

echo "TAP version 13"
echo "1..$#"
n=0 pass=0 fail=0 skip=0
for prog in "$@"; do
	n=$((n + 1))
	name=$(basename "$prog")
	var=KSELFTEST_$(echo "$name" | tr -c '[:alnum:]_\n' '_' | tr '[:lower:]' '[:upper:]')_ARGS
	eval "args=\${$var:-}"
	hdr="selftests: $COLLECTION: $name"
	echo "# $hdr"
	if [ ! -x "$prog" ]; then
		echo "# $prog is missing"
		rc=1
	else
		# the exit code goes round the "# " prefixing through a file
		rcfile=$(mktemp)
		{ (cd "$(dirname "$prog")" &&
		   if command -v timeout >/dev/null; then
			timeout "$timeout_s" "./$name" $args
		   else
			"./$name" $args
		   fi) 2>&1; echo $? >"$rcfile"; } | sed -e 's/^/# /'
		rc=$(cat "$rcfile")
		rm -f "$rcfile"
	fi
	case $rc in
	0) echo "ok $n $hdr"; pass=$((pass + 1)) ;;
	4) echo "ok $n $hdr # SKIP"; skip=$((skip + 1)) ;;
	124) echo "not ok $n $hdr # TIMEOUT $timeout_s seconds"; fail=$((fail + 1)) ;;
	*) echo "not ok $n $hdr # exit=$rc"; fail=$((fail + 1)) ;;
	esac
done
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
[ $fail -eq 0 ]
