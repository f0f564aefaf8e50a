#!/bin/bash
# LocalStack "ready" hook for local/docker-compose.yml: creates what LightTech needs, and
# nothing else. Safe to run again: what already exists is left as it is.
#
#   - DynamoDB table `lighttech` with exactly the schema `DynamoStore::create_table`
#     (shared/src/store/dynamo.rs) creates: PK/SK (S) keys, index GSI1 (GSI1PK/GSI1SK,
#     projection ALL), on-demand billing, encryption at rest; then TTL on attribute `ttl`.
#   - Secrets Manager secret `lighttech/signing-key` holding a freshly generated random
#     signing key (64 hex characters); the api service reads it through SECRET_KEY_ARN.
#
# Mounted into /etc/localstack/init/ready.d/; LocalStack runs it only if it is executable.
# Checked statically by tests/tests/suite/compose.rs.
set -euo pipefail

# LocalStack 4 gives init hooks no AWS credentials of their own. These put the table and the
# secret in the same account (000000000000) and region as the api service's.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1

# create_unless_exists WHAT EXISTS_CODE ARGS...: runs `awslocal ARGS...`; failing with
# EXISTS_CODE (the service's "already exists" error) counts as success.
create_unless_exists() {
    local what=$1 exists_code=$2 out
    shift 2
    if ! out=$(awslocal "$@" 2>&1 >/dev/null); then
        case $out in
            *"$exists_code"*) echo "lighttech init: $what already exists" ;;
            *)
                echo "lighttech init: cannot create $what: $out" >&2
                return 1
                ;;
        esac
    fi
}

create_unless_exists "table lighttech" ResourceInUseException \
    dynamodb create-table \
    --table-name lighttech \
    --attribute-definitions \
        AttributeName=PK,AttributeType=S \
        AttributeName=SK,AttributeType=S \
        AttributeName=GSI1PK,AttributeType=S \
        AttributeName=GSI1SK,AttributeType=S \
    --key-schema AttributeName=PK,KeyType=HASH AttributeName=SK,KeyType=RANGE \
    --global-secondary-indexes \
        'IndexName=GSI1,KeySchema=[{AttributeName=GSI1PK,KeyType=HASH},{AttributeName=GSI1SK,KeyType=RANGE}],Projection={ProjectionType=INCLUDE,NonKeyAttributes=[user_id,username,username_key,email,is_staff,is_active,created_at]}' \
    --billing-mode PAY_PER_REQUEST \
    --sse-specification Enabled=true
awslocal dynamodb wait table-exists --table-name lighttech

ttl_status=$(awslocal dynamodb describe-time-to-live --table-name lighttech \
    --query 'TimeToLiveDescription.TimeToLiveStatus' --output text)
case $ttl_status in
    ENABLED | ENABLING) ;;
    *)
        awslocal dynamodb update-time-to-live --table-name lighttech \
            --time-to-live-specification Enabled=true,AttributeName=ttl >/dev/null
        ;;
esac
echo "lighttech init: table lighttech ready (TTL on ttl)"

# 32 random bytes as 64 hex characters; never printed.
signing_key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
if [ "${#signing_key}" -lt 48 ]; then
    echo "lighttech init: could not generate a signing key" >&2
    exit 1
fi
create_unless_exists "secret lighttech/signing-key" ResourceExistsException \
    secretsmanager create-secret \
    --name lighttech/signing-key \
    --description "LightTech JWT and cursor signing key (local compose stack)" \
    --secret-string "$signing_key"
unset signing_key
echo "lighttech init: secret lighttech/signing-key ready"
