#!/bin/sh
GLIBC_TUNABLES=glibc.malloc.mxfast=0 exec /tmp/triage-cur "$@"
