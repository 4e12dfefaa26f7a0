#!/bin/sh
# Image build step 1 (builder stage of deploy/Dockerfile; also run by tests/test_deploy_image.py):
# build the dbproxy wheel from SRC and a wheel of every dependency into WHEELS.
#   build-wheels.sh SRC WHEELS
set -eu
src=$1
wheels=$2
python -m pip wheel --wheel-dir "$wheels" "$src"
