# Wall-time bookkeeping for tests/run and .ci/run: each phase's time, printed as a table when
# the script exits (also on failure, so a slow or failing step is visible in every log).
#
#   . tests/phases.sh
#   phase "build" cargo build ...          # runs a command as a phase
#   phase_begin "installs"; ...; phase_end "installs" [status]   # a phase around other work
#   phase_end_at NAME STATUS EPOCH_SECONDS                        # one that ended earlier
#
# Sourced, not run. Phase names must not contain spaces.

declare -A _phase_started=()
_phase_rows=()
_phases_t0=$(date +%s.%N)

phase_begin() {
    _phase_started[$1]=$(date +%s.%N)
}

phase_end() {
    phase_end_at "$1" "${2:-ok}" "$(date +%s.%N)"
}

# A phase that ended at a time recorded earlier (a background phase, awaited later).
phase_end_at() {
    local name=$1 status=$2 end=$3
    _phase_rows+=("$name $status $(python3 -c "print(f'{$end - ${_phase_started[$name]}:.1f}')")")
}

phase() {
    local name=$1 status=0
    shift
    phase_begin "$name"
    "$@" || status=$?
    if [ "$status" -eq 0 ]; then phase_end "$name" ok; else phase_end "$name" "failed($status)"; fi
    return "$status"
}

phases_table() {
    local title=$1 now
    now=$(date +%s.%N)
    {
        echo
        echo "== $title: wall time per phase (seconds; background phases overlap the others)"
        printf '%-28s %-12s %8s\n' phase status seconds
        local row
        for row in "${_phase_rows[@]}"; do
            # shellcheck disable=SC2086
            printf '%-28s %-12s %8s\n' $row
        done
        printf '%-28s %-12s %8s\n' total "" "$(python3 -c "print(f'{$now - $_phases_t0:.1f}')")"
    } >&2
}
