#!/usr/bin/env bash
# vrift-cache.sh — the CI cache step: restore a dependency tree for the key of its lock files,
# else run the install command and save the result. The same script backs the GitHub Action
# (action.yml), the GitLab CI example and plain shell use (README, "CI cache").
#
#   VRIFT_CACHE_PATH=node_modules VRIFT_CACHE_KEY_FROM=package-lock.json \
#   VRIFT_CACHE_RUN='npm ci' VR_REMOTE=s3://bucket/ci ci/vrift-cache.sh
#
# Environment:
#   VRIFT_CACHE_PATH            the tree (required)
#   VRIFT_CACHE_KEY_FROM        lock files, blank-separated (required)
#   VRIFT_CACHE_RUN             install command on a miss (bash -c); none: exit 3 on a miss
#   VRIFT_CACHE_RESTORE_PREFIX  fallback key prefixes, blank-separated (restore-keys)
#   VRIFT_CACHE_KEY             readable part of the key (default: the tree's name + platform)
#   VR_REMOTE                   s3://BUCKET/PREFIX (credentials from the AWS environment)
#   VRIFT                       the vrift binary (default: vrift on PATH)
# Prints `hit=local|remote|partial|miss` to $GITHUB_OUTPUT when set; exits as vrift restore
# does: 0 restored or saved, 1 error, 3 a miss without an install command.
set -euo pipefail
vrift=${VRIFT:-vrift}
: "${VRIFT_CACHE_PATH:?set VRIFT_CACHE_PATH}" "${VRIFT_CACHE_KEY_FROM:?set VRIFT_CACHE_KEY_FROM}"
args=(--json restore "$VRIFT_CACHE_PATH")
for f in $VRIFT_CACHE_KEY_FROM; do args+=(--key-from "$f"); done
for p in ${VRIFT_CACHE_RESTORE_PREFIX:-}; do args+=(--restore-prefix "$p"); done
if [ -n "${VRIFT_CACHE_KEY:-}" ]; then args+=(--key "$VRIFT_CACHE_KEY"); fi
if [ -n "${VRIFT_CACHE_RUN:-}" ]; then args+=(-- bash -c "$VRIFT_CACHE_RUN"); fi
set +e
out=$("$vrift" "${args[@]}")
rc=$?
set -e
hit=$(printf '%s' "$out" | sed -n 's/.*"hit":"\([a-z]*\)".*/\1/p')
echo "vrift cache: ${hit:-error} (exit $rc)" >&2
if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "hit=${hit:-error}" >> "$GITHUB_OUTPUT"; fi
exit "$rc"
