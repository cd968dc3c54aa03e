#!/bin/sh
# Build oss_forwarder.zip for Aliyun Function Compute (Python 3.10 runtime, handler index.handler): the
# handler plus boto3 and its dependencies at the exact versions and wheel hashes of requirements.txt, for
# Linux x86_64. Run from anywhere; the zip lands next to this script.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# --isolated: PyPI only, whatever pip.conf or PIP_* say; --no-deps: only what requirements.txt lists.
python3 -m pip --isolated install --quiet --target "$build" --platform manylinux2014_x86_64 \
    --python-version 3.10 --only-binary=:all: --no-deps --require-hashes -r "$here/requirements.txt"
cp "$here/index.py" "$build/"
rm -f "$here/oss_forwarder.zip"
(cd "$build" && python3 -m zipfile -c "$here/oss_forwarder.zip" .)
echo "$here/oss_forwarder.zip"
