#!/bin/sh
echo "combined coverage reports are unsupported offline; read bazel-testlogs/*/coverage.dat" >&2
exit 1
