#!/usr/bin/env bash
# From a checkout to a checked deployment, in one command:
#
#   local/deploy.sh [sam deploy options, e.g. --parameter-overrides AlarmEmail=ops@example.com]
#
# 1. local/sam-build.sh: every function built for arm64 with cargo lambda, then `sam build`;
# 2. `sam deploy`: samconfig.toml answers everything but the change-set confirmation;
# 3. stack-policy.json set on the stack: from then on CloudFormation refuses any update that
#    would replace or delete the table (the money), whatever a template change asks for;
# 4. local/smoke-test.sh against the stack's ApiUrl: the whole journey, both slash forms.
# The stack is samconfig.toml's stack_name unless `--stack-name NAME` is given.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[$i]} in
        --stack-name) stack=${args[$((i + 1))]:-} ;;
        --stack-name=*) stack=${args[$i]#--stack-name=} ;;
    esac
done

local/sam-build.sh
.venv/bin/sam deploy "$@"
if [ -z "$stack" ]; then
    stack=$(.venv/bin/python tests/template/toml2json.py samconfig.toml |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["default"]["global"]["parameters"]["stack_name"])')
fi
url=$(.venv/bin/python local/stack-policy.py "$stack" stack-policy.json)
echo "== $stack: stack policy stack-policy.json set; API at $url"
local/smoke-test.sh "$url"
