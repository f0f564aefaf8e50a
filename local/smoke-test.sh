#!/usr/bin/env bash
# The whole journey against any running deployment, every path in both slash forms:
#
#   local/smoke-test.sh BASE_URL        # e.g. https://abc123.execute-api.eu-west-1.amazonaws.com
#                                       #   or http://127.0.0.1:8000 (lighttech-local)
#
# health, two new users registered and logged in, a deposit (and its replay by Idempotency-Key),
# withdrawals, transfers, both balances, the history with If-None-Match (304), sessions (one
# revoked), refresh, logout (its tokens then refused), the documentation and the admin page,
# a non-staff call to the admin API (403) and an unknown path (404). Each request is made once
# with the trailing slash and once without; a 308 to the other form (API Gateway's `$default`
# for a route registered without the slash) is followed with method and body kept, and counted.
# Prints a table of every request; exits non-zero on any unexpected status or value.
# Needs bash, curl and python3 only. It creates two users (smoke-<random>-a/-b) and leaves them.
set -uo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: local/smoke-test.sh BASE_URL" >&2
    exit 2
fi
base=${1%/}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
password="Smoke-$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
failures=0
rows=()
n=0

# json FILE PATH: a value of the JSON body (PATH like `access` or `results.0.type`), or empty.
json() {
    python3 - "$1" "$2" <<'PY'
import json, sys
try:
    value = json.load(open(sys.argv[1]))
    for part in sys.argv[2].split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
except Exception:
    value = ""
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list, bool)) else value))
PY
}

# header NAME: a header of the last response (case-insensitive), or empty.
header() {
    python3 - "$work/headers" "$1" <<'PY'
import sys
name, value = sys.argv[2].lower(), ""
for line in open(sys.argv[1], encoding="latin-1"):
    if line.lower().startswith("http/"):
        value = ""  # a redirect's headers are followed by the final response's
    elif ":" in line and line.split(":", 1)[0].strip().lower() == name:
        value = line.split(":", 1)[1].strip()
print(value)
PY
}

# call EXPECTED METHOD PATH [BODY] [curl options...]: one request, recorded in the table. The
# body of the answer is in $work/body, its headers in $work/headers; $status is its status.
call() {
    local expected=$1 method=$2 path=$3 body=${4:-}
    shift 3
    [ $# -gt 0 ] && shift
    local args=(-sS -L -o "$work/body" -D "$work/headers" -X "$method"
        -w '%{http_code} %{num_redirects} %{time_total}' "$@")
    if [ -n "$body" ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    local out
    out=$(curl "${args[@]}" "$base$path" 2>"$work/curl.err") || out="000 0 0"
    read -r status redirects seconds <<< "$out"
    n=$((n + 1))
    local verdict=ok
    if [ "$status" != "$expected" ]; then
        verdict="FAIL (expected $expected)"
        failures=$((failures + 1))
        [ -s "$work/curl.err" ] && verdict="$verdict $(head -c 200 "$work/curl.err")"
        verdict="$verdict $(head -c 300 "$work/body" 2>/dev/null | tr '\n' ' ')"
    elif [ -z "$(header x-request-id)" ]; then
        verdict="FAIL (no X-Request-Id)"
        failures=$((failures + 1))
    fi
    local ms
    ms=$(python3 -c "print(round($seconds * 1000))")
    rows+=("$(printf '%3d  %-6s %-48s %6s %9s %7s  %s' "$n" "$method" "$path" "$status" "$redirects" "$ms" "$verdict")")
    echo "${rows[-1]}"
}

# expect WHAT ACTUAL WANTED: a check on a value, recorded as a failure when it differs.
expect() {
    if [ "$2" != "$3" ]; then
        failures=$((failures + 1))
        rows+=("$(printf '     check  %-48s FAIL: got %q, expected %q' "$1" "$2" "$3")")
        echo "${rows[-1]}"
    fi
}

printf '%3s  %-6s %-48s %6s %9s %7s  %s\n' "#" method path status redirects ms result
bearer() { echo "Authorization: Bearer $1"; }

# Health, both forms.
for path in /api/health/ /api/health; do
    call 200 GET "$path"
    expect "health status" "$(json "$work/body" status)" ok
done

# Two users: one registered and logged in with the slash, one without.
a="smoke-$run-a" b="smoke-$run-b"
call 201 POST /api/auth/v1/register/ "{\"username\":\"$a\",\"email\":\"$a@example.com\",\"password\":\"$password\"}"
expect "register balance" "$(json "$work/body" balance)" 0.00
call 201 POST /api/auth/v1/register "{\"username\":\"$b\",\"email\":\"$b@example.com\",\"password\":\"$password\"}"
call 200 POST /api/auth/v1/login/ "{\"username\":\"$a\",\"password\":\"$password\"}"
access_a=$(json "$work/body" access) refresh_a=$(json "$work/body" refresh)
expect "token type" "$(json "$work/body" token_type)" Bearer
call 200 POST /api/auth/v1/login "{\"username\":\"$b\",\"password\":\"$password\"}"
access_b=$(json "$work/body" access)

for path in /api/auth/v1/me/ /api/auth/v1/me; do
    call 200 GET "$path" "" -H "$(bearer "$access_a")"
    expect "me username" "$(json "$work/body" username)" "$a"
done
for path in /api/balance/v1/ /api/balance/v1; do
    call 200 GET "$path" "" -H "$(bearer "$access_a")"
    expect "opening balance" "$(json "$work/body" balance)" 0.00
done

# Money: a deposit and its replay by key, two withdrawals, two transfers, each form once.
key="smoke-$run-deposit"
call 201 POST /api/balance/v1/deposit/ '{"amount":"100.00","description":"smoke"}' \
    -H "$(bearer "$access_a")" -H "Idempotency-Key: $key"
deposit_id=$(json "$work/body" id)
expect "deposit balance_after" "$(json "$work/body" balance_after)" 100.00
call 201 POST /api/balance/v1/deposit '{"amount":"100.00","description":"smoke"}' \
    -H "$(bearer "$access_a")" -H "Idempotency-Key: $key"
expect "replayed deposit id" "$(json "$work/body" id)" "$deposit_id"
expect "Idempotent-Replayed" "$(header idempotent-replayed)" true
call 201 POST /api/balance/v1/withdraw/ '{"amount":"30.00"}' -H "$(bearer "$access_a")"
expect "withdraw balance_after" "$(json "$work/body" balance_after)" 70.00
call 201 POST /api/balance/v1/withdraw '{"amount":"5.00"}' -H "$(bearer "$access_a")"
expect "withdraw balance_after" "$(json "$work/body" balance_after)" 65.00
call 422 POST /api/balance/v1/withdraw/ '{"amount":"1000.00"}' -H "$(bearer "$access_a")"
expect "overdraft code" "$(json "$work/body" code)" insufficient_funds
call 201 POST /api/balance/v1/transfer/ "{\"to\":\"$b\",\"amount\":\"15.00\"}" -H "$(bearer "$access_a")"
expect "transfer balance_after" "$(json "$work/body" balance_after)" 50.00
call 201 POST /api/balance/v1/transfer "{\"to\":\"$b\",\"amount\":\"5.00\"}" -H "$(bearer "$access_a")"
expect "transfer balance_after" "$(json "$work/body" balance_after)" 45.00
call 200 GET /api/balance/v1/ "" -H "$(bearer "$access_b")"
expect "recipient balance" "$(json "$work/body" balance)" 20.00

# History: newest first, then the same page again with its ETag → 304, in the other form.
call 200 GET "/api/balance/v1/operations/?limit=10" "" -H "$(bearer "$access_a")"
expect "history length" "$(python3 -c "import json; print(len(json.load(open('$work/body'))['results']))")" 5
expect "newest operation" "$(json "$work/body" results.0.type)" transfer_out
expect "oldest operation" "$(json "$work/body" results.4.type)" deposit
etag=$(header etag)
expect "history ETag present" "$([ -n "$etag" ] && echo yes)" yes
call 304 GET "/api/balance/v1/operations?limit=10" "" -H "$(bearer "$access_a")" -H "If-None-Match: $etag"
call 200 GET "/api/balance/v1/operations?limit=2&type=withdrawal" "" -H "$(bearer "$access_a")"
expect "filtered history" "$(json "$work/body" results.1.amount)" 30.00

# Sessions: two more logins of a, one revoked with each form of the path.
for slash in / ""; do
    call 200 POST /api/auth/v1/login/ "{\"username\":\"$a\",\"password\":\"$password\"}"
    extra=$(json "$work/body" access)
    call 200 GET "/api/auth/v1/sessions$slash" "" -H "$(bearer "$extra")"
    sid=$(python3 -c "import json; print(next(s['id'] for s in json.load(open('$work/body'))['results'] if s['current']))")
    call 204 DELETE "/api/auth/v1/sessions/$sid$slash" "" -H "$(bearer "$access_a")"
    call 401 GET /api/auth/v1/me/ "" -H "$(bearer "$extra")"
done

# Refresh in both forms (each rotation spends the refresh token it was given).
call 200 POST /api/auth/v1/token/refresh/ "{\"refresh\":\"$refresh_a\"}"
access_a=$(json "$work/body" access) refresh_a=$(json "$work/body" refresh)
call 200 POST /api/auth/v1/token/refresh "{\"refresh\":\"$refresh_a\"}"
access_a=$(json "$work/body" access) refresh_a=$(json "$work/body" refresh)
call 200 GET /api/auth/v1/me "" -H "$(bearer "$access_a")"
user_id=$(json "$work/body" id)

# A non-staff user is refused by the admin API (each of its paths reaches its function).
for path in /api/admin/v1/users /api/admin/v1/audit "/api/admin/v1/users/$user_id" \
    "/api/admin/v1/users/$user_id/operations"; do
    call 403 GET "$path/" "" -H "$(bearer "$access_b")"
    call 403 GET "$path" "" -H "$(bearer "$access_b")"
done
for verb in deactivate reactivate; do
    call 403 POST "/api/admin/v1/users/$user_id/$verb/" '{}' -H "$(bearer "$access_b")"
    call 403 POST "/api/admin/v1/users/$user_id/$verb" '{}' -H "$(bearer "$access_b")"
done

# Logout in both forms; the tokens are refused afterwards.
call 204 POST /api/auth/v1/logout/ "{\"refresh\":\"$refresh_a\"}" -H "$(bearer "$access_a")"
call 401 GET /api/auth/v1/me/ "" -H "$(bearer "$access_a")"
expect "after logout" "$(json "$work/body" code)" invalid_token
call 204 POST /api/auth/v1/logout "" -H "$(bearer "$access_b")"
call 401 GET /api/balance/v1 "" -H "$(bearer "$access_b")"

# Documentation, the admin page, and what no route serves.
for path in /api/schema/ /api/schema /api/docs/ /api/docs /api/redoc/ /api/redoc /admin/ /admin; do
    call 200 GET "$path"
done
call 200 GET /api/schema/
expect "OpenAPI version" "$(json "$work/body" openapi | cut -c1-2)" 3.
call 200 GET /api/redoc/redoc.standalone.js
call 200 GET /api/docs/swagger-ui.css
expect "Swagger UI's stylesheet" "$(header content-type | cut -d';' -f1)" text/css
call 404 GET /api/no-such-path/
expect "unknown path code" "$(json "$work/body" code)" not_found
call 405 DELETE /api/balance/v1/
expect "Allow" "$(header allow)" GET

echo
echo "$n requests against $base, $failures failure(s)."
if [ "$failures" -gt 0 ]; then
    echo "FAILED:"
    printf '%s\n' "${rows[@]}" | grep FAIL
    exit 1
fi
