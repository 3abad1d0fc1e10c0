#!/usr/bin/env python3
"""Minimal lcov merger for `bazel coverage` offline: turns gcc's gcov JSON into one lcov file.

Bazel calls it with --coverage_dir=DIR --output_file=FILE (other flags are ignored).
"""
import glob
import gzip
import json
import os
import sys


def main(argv):
    args = dict(a.split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    cov_dir = args.get("--coverage_dir", os.environ.get("COVERAGE_DIR", "."))
    out = args.get("--output_file", os.environ.get("COVERAGE_OUTPUT_FILE", "coverage.dat"))
    lines_by_file = {}
    for path in glob.glob(os.path.join(cov_dir, "**", "*.gcov.json.gz"), recursive=True):
        with gzip.open(path, "rt") as f:
            data = json.load(f)
        for entry in data.get("files", []):
            hits = lines_by_file.setdefault(entry["file"], {})
            for line in entry.get("lines", []):
                n = line["line_number"]
                hits[n] = hits.get(n, 0) + line["count"]
    with open(out, "w") as f:
        for name in sorted(lines_by_file):
            hits = lines_by_file[name]
            f.write("SF:%s\n" % name)
            for n in sorted(hits):
                f.write("DA:%d,%d\n" % (n, hits[n]))
            f.write("LH:%d\nLF:%d\nend_of_record\n" % (sum(1 for v in hits.values() if v), len(hits)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
