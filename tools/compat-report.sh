#!/bin/sh
# make compat: the report pages in headless Chromium (tools/check-report.sh, = make check-report).
set -eu
exec sh "$(dirname "$0")/check-report.sh"
