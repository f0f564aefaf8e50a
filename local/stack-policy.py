"""Sets stack-policy.json on a deployed stack and prints the stack's ApiUrl output.

    .venv/bin/python local/stack-policy.py STACK stack-policy.json

`sam deploy` deploys through change sets, which carry no stack policy, so local/deploy.sh sets
it after each deploy (the same policy each time: setting it again changes nothing). boto3 comes
with aws-sam-cli in .venv; the credentials and region are the AWS configuration's.
"""

import sys

import boto3


def main() -> int:
    stack, policy_file = sys.argv[1], sys.argv[2]
    cloudformation = boto3.client("cloudformation")
    with open(policy_file, encoding="utf-8") as f:
        cloudformation.set_stack_policy(StackName=stack, StackPolicyBody=f.read())
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    urls = [o["OutputValue"] for o in outputs if o["OutputKey"] == "ApiUrl"]
    if not urls:
        print(f"stack {stack} has no ApiUrl output", file=sys.stderr)
        return 1
    print(urls[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
