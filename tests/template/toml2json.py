"""Prints a TOML file (samconfig.toml) as JSON, for the template tests: `python toml2json.py FILE`."""

import json
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    json.dump(tomllib.load(f), sys.stdout)
