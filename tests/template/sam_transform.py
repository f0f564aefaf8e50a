"""Prints a SAM template as SAM's transform turns it into CloudFormation, as JSON on stdout.

    .venv/bin/python tests/template/sam_transform.py template.yaml

It runs samtranslator (installed with aws-sam-cli into .venv), offline, in us-east-1, the way
CloudFormation's `AWS::Serverless-2016-10-31` transform does on deploy, so the template tests
(tests/tests/suite/template/) look at what CloudFormation receives: the HTTP API's OpenAPI body
with its route keys, the stage, the aliases, the CodeDeploy deployment groups. The local code
paths are replaced by an S3 address first, as `sam package` would. A transform error is
printed and exits 1.
"""

import json
import logging
import os
import sys

from cfnlint.decode import decode
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

PACKAGED = "s3://bucket/value"


def main() -> int:
    path = sys.argv[1]
    template, matches = decode(path)
    if matches or template is None:
        for match in matches:
            print(match, file=sys.stderr)
        return 1
    function_globals = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = PACKAGED
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(properties, dict):
            if "CodeUri" in properties:
                properties["CodeUri"] = PACKAGED
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Feature-toggle notices, not findings.
    logging.getLogger("samtranslator").setLevel(logging.ERROR)
    try:
        transformed = Translator(managed_policy_map={}, sam_parser=Parser()).translate(
            sam_template=template, parameter_values={}, passthrough_metadata=True
        )
    except InvalidDocumentException as error:
        for cause in error.causes:
            print(cause.message, file=sys.stderr)
        return 1
    json.dump(transformed, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
