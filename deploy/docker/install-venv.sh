#!/bin/sh
# Image build step 2 (runtime stage of deploy/Dockerfile; also run by tests/test_deploy_image.py):
# make a fresh virtualenv VENV without pip and install dbproxy into it with the base Python's pip,
# from WHEELS only (--no-index: nothing is downloaded, so the image holds exactly the wheels the
# builder stage built, and no installer).
#   install-venv.sh WHEELS VENV       (PYTHON: the interpreter to use, default python3)
set -eu
wheels=$1
venv=$2
"${PYTHON:-python3}" -m venv --without-pip "$venv"
"${PYTHON:-python3}" -m pip --python "$venv/bin/python" install --no-index --find-links "$wheels" dbproxy
"$venv/bin/dbproxy" --version
