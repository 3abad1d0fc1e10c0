#!/usr/bin/env python3
"""Sums the test cases of Bazel's test.xml files into one line: "N passed, N failed, N skipped".

Usage: test_summary.py TESTLOGS_DIR //pkg:target ...
A target with no test.xml (it did not build, or never ran) counts as one failure, so a broken
build can never look green.
"""
import os
import sys
import xml.etree.ElementTree as ET


def count(xml_path):
    passed = failed = skipped = 0
    root = ET.parse(xml_path).getroot()
    cases = list(root.iter("testcase"))
    if not cases:
        # sh_test and friends: Bazel writes a suite without cases on some paths.
        suites = list(root.iter("testsuite"))
        bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        return (0, 1, 0) if bad else (1, 0, 0)
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    logs = argv[1]
    totals = [0, 0, 0]
    missing = []
    for target in argv[2:]:
        rel = target.lstrip("/").replace(":", "/")
        path = os.path.join(logs, rel, "test.xml")
        if not os.path.exists(path):
            missing.append(target)
            totals[1] += 1
            continue
        try:
            got = count(path)
        except ET.ParseError:
            missing.append(target)
            totals[1] += 1
            continue
        for i in range(3):
            totals[i] += got[i]
    for target in missing:
        print("no test result for %s (counted as failed)" % target, file=sys.stderr)
    print("%d passed, %d failed, %d skipped" % tuple(totals))
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
