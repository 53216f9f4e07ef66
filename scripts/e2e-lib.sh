# e2e-lib.sh: helpers the package tests source (bash).
# step NAME starts a timed step; check prints ok/FAIL lines and counts;
# finish prints the closing "N passed, N failed" line and exits with it.

passed=0
failed=0
step_name=
step_t0=

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

step() {
	step_done
	step_name=$*
	step_t0=$(now)
	echo "== $step_name"
}

step_done() {
	if [ -n "$step_name" ]; then
		echo "   ($step_name: $(since "$step_t0") s)"
	fi
	step_name=
}

ok() {
	passed=$((passed + 1))
	echo "ok: $*"
}

fail() {
	failed=$((failed + 1))
	echo "FAIL: $*"
}

# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

# contains DESCRIPTION FILE PATTERN: ok when FILE has a line matching the
# extended regular expression PATTERN.
contains() {
	if grep -qE -- "$3" "$2"; then ok "$1"; else fail "$1 (no line matching /$3/ in $2)"; fi
}

# lacks DESCRIPTION FILE PATTERN: ok when no line of FILE matches.
lacks() {
	if grep -qE -- "$3" "$2"; then fail "$1 (a line matches /$3/ in $2)"; else ok "$1"; fi
}

# equal DESCRIPTION GOT WANT
equal() {
	if [ "$2" = "$3" ]; then ok "$1: $2"; else fail "$1: got '$2', want '$3'"; fi
}

finish() {
	step_done
	echo "$1: $passed passed, $failed failed"
	[ "$failed" = 0 ]
}
