#!/usr/bin/env python3
"""Prints the slowest tests of nextest's last JUnit report: where the suite's time goes.

usage: tests/slowest.py JUNIT_XML [N]
"""
import sys
import xml.etree.ElementTree as ET

path = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 15
cases = []
for case in ET.parse(path).getroot().iter("testcase"):
    cases.append((float(case.get("time", "0")), f"{case.get('classname')} {case.get('name')}"))
cases.sort(reverse=True)
total = sum(t for t, _ in cases)
print(f"== the {min(count, len(cases))} slowest of {len(cases)} tests ({total:.0f} test-seconds in all)")
for seconds, name in cases[:count]:
    print(f"{seconds:8.1f} s  {name}")
