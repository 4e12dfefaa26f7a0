#!/bin/sh
# Image build step 1 (builder stage of deploy/Dockerfile; also run by tests/test_deploy_image.py):
# build the dbproxy wheel from SRC and a wheel of every dependency into WHEELS.
#   build-wheels.sh SRC WHEELS        (PYTHON: the interpreter to use, default python3)
set -eu
src=$1
wheels=$2
"${PYTHON:-python3}" -m pip wheel --wheel-dir "$wheels" "$src"
