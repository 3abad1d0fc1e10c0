#!/usr/bin/env bash
# Builds GPU test and benchmark binaries (-c opt) and gathers them, with the non-system shared
# libraries they need, into gpu_bundle/ (git-ignored), to carry to a GPU machine that has no
# Bazel. See docs/GPU.md.
#
#   tools/dev gpu-bundle //kernels:load_histogram_test //kernels:kernels_benchmark
#   # on the GPU machine:  gpu_bundle/run.sh            (runs every *_test, prints a summary)
#                          gpu_bundle/bin/NAME [ARGS]    (anything else; run.sh sets the paths)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: tools/dev gpu-bundle //pkg:target ..." >&2
  exit 2
fi
bazel build -c opt --dynamic_mode=off "$@"
out=gpu_bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
# Libraries the GPU machines have (or must come from there: the driver, NCCL, glibc, libstdc++).
system_re='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcuda\.|libnccl\.|libnvidia)'
for target in "$@"; do
  path="bazel-bin/$(echo "${target#//}" | sed 's|:|/|')"
  if [ ! -x "$path" ]; then
    echo "not an executable: $target ($path)" >&2
    exit 1
  fi
  cp "$path" "$out/bin/"
  # (Scripts, e.g. a multi-process test's launcher, have no libraries.)
  { ldd "$path" 2>/dev/null || true; } | awk '/=>/ {print $1, $3}' | while read -r name file; do
    if ! [[ "$name" =~ $system_re ]] && [ -f "$file" ]; then
      cp -L -n "$file" "$out/lib/" 2>/dev/null || true
    fi
  done
  # Runfiles (golden data) travel too.
  if [ -d "$path.runfiles" ]; then
    cp -rL "$path.runfiles" "$out/bin/" 2>/dev/null || true
  fi
done
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every *_test in bin/ (or the ones named) and prints "N passed, N failed, N skipped".
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0
export TEST_SRCDIR="$here/bin" TEST_WORKSPACE=eplb
xml_dir="${OUT:-/tmp}/gtest_xml"
mkdir -p "$xml_dir"
rc=0
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=($(cd "$here/bin" && ls | grep '_test$'))
for t in "${tests[@]}"; do
  echo "=== $t"
  TEST_SRCDIR="$here/bin/$t.runfiles" "$here/bin/$t" --gtest_output="xml:$xml_dir/$t.xml" || rc=1
done
python3 - "$xml_dir" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
p = f = s = 0
for x in glob.glob(sys.argv[1] + "/*.xml"):
    for c in ET.parse(x).getroot().iter("testcase"):
        if c.find("failure") is not None: f += 1
        elif c.find("skipped") is not None or c.get("result") == "skipped": s += 1
        else: p += 1
print("%d passed, %d failed, %d skipped" % (p, f, s))
PY
exit $rc
RUN
chmod +x "$out/run.sh"
du -sh "$out" >&2
ls "$out/bin" "$out/lib" >&2
