#!/bin/sh
# Task-publisher Job: create the task once, then genesis.json from it and members.json.
# Idempotent: a finished task or genesis is kept, a half-written one is redone.
set -eu
out=${TASK_VOLUME:-/var/lib/zkpot/task}   # the zkpot-task PVC
if [ ! -f "$out/task/task.json" ]; then
  rm -rf "$out/task.tmp" "$out/task"
  # shellcheck disable=SC2086  # TASK_ARGS holds several flags
  zkpot task create --out "$out/task.tmp" --publisher-key /etc/zkpot/publisher/publisher.json $TASK_ARGS
  mv "$out/task.tmp" "$out/task"
fi
if [ ! -f "$out/genesis.json" ]; then
  python "$(dirname "$0")/make_genesis.py" --task-dir "$out/task" \
    --members /etc/zkpot/members/members.json --out "$out/genesis.json.tmp"
  mv "$out/genesis.json.tmp" "$out/genesis.json"
fi
zkpot task show "$out/task" || true  # summary in the Job log
