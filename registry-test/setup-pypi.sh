#!/usr/bin/env bash
# The pip side of the tests, made once into DIR (default target/pypi-tools):
#   DIR/venv        uv (resolves pip requirements for envlayer) and pypiserver (a real PEP 503 index),
#                   pinned, from PyPI
#   DIR/wheelhouse  real wheels from PyPI for CPython 3.11 on manylinux x86_64, the tests' index content
#   DIR/sdists      a real source distribution from PyPI (and setuptools, its build backend, as a wheel)
#   DIR/validators  third-party SBOM validators from PyPI: spdx-tools (pyspdxtools) and
#                   cyclonedx-python-lib with its JSON schema validation, and kubernetes-validate
#                   (Kubernetes JSON schemas, offline) for the prepull DaemonSet
# usage: setup-pypi.sh [DIR]; prints DIR. Safe to run again: finished parts are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../target/pypi-tools}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Pins: bump together with the README ("Pip packages") and MIN_UV in src/pypi/resolve.rs.
UV=uv==0.13.9
PYPISERVER=pypiserver==2.4.2
WHEELS=(tabulate==0.9.0 msgpack==1.1.0 python-dateutil==2.9.0.post0 six==1.16.0 attrs==24.2.0)
SDISTS=(six==1.16.0)
BACKEND=(setuptools==75.8.0)
VALIDATORS=(spdx-tools==0.8.5 "cyclonedx-python-lib[json-validation]==11.12.0" kubernetes-validate==1.37.0 PyYAML==6.0.2)
if [ ! -x "$dir/venv/bin/uv" ] || [ ! -x "$dir/venv/bin/pypi-server" ]; then
  rm -rf "$dir/venv.tmp"
  python3 -m venv "$dir/venv.tmp" >&2
  "$dir/venv.tmp/bin/pip" install -q --disable-pip-version-check "$UV" "$PYPISERVER" passlib >&2
  rm -rf "$dir/venv"
  mv "$dir/venv.tmp" "$dir/venv"
  # The venv's scripts name venv.tmp in their shebangs; make them name the final folder.
  sed -i "1s|$dir/venv.tmp/|$dir/venv/|" "$dir"/venv/bin/* 2>/dev/null || true
fi
if [ ! -f "$dir/wheelhouse/.done" ]; then
  rm -rf "$dir/wheelhouse"
  mkdir -p "$dir/wheelhouse"
  "$dir/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: \
    --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$dir/wheelhouse" "${WHEELS[@]}" >&2
  touch "$dir/wheelhouse/.done"
fi
if [ ! -f "$dir/sdists/.done" ]; then
  rm -rf "$dir/sdists"
  mkdir -p "$dir/sdists"
  "$dir/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$dir/sdists" "${SDISTS[@]}" >&2
  "$dir/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$dir/sdists" "${BACKEND[@]}" >&2
  touch "$dir/sdists/.done"
fi
if [ ! -x "$dir/validators/bin/pyspdxtools" ] || [ ! -x "$dir/validators/bin/kubernetes-validate" ]; then
  rm -rf "$dir/validators.tmp"
  python3 -m venv "$dir/validators.tmp" >&2
  "$dir/validators.tmp/bin/pip" install -q --disable-pip-version-check "${VALIDATORS[@]}" >&2
  rm -rf "$dir/validators"
  mv "$dir/validators.tmp" "$dir/validators"
  sed -i "1s|$dir/validators.tmp/|$dir/validators/|" "$dir"/validators/bin/* 2>/dev/null || true
fi
echo "$dir"
