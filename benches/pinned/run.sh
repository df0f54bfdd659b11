#!/bin/bash
# A/B of daemon builds by CPU time per operation (see cpu_per_op.c), as root:
#   benches/pinned/run.sh CPUS N ALTERNATIONS MODE BIN...
# e.g. benches/pinned/run.sh 1 2000 4 on /tmp/sectionfs-old target/release/sectionfs
# CPUS: what taskset pins the daemon and the caller to ("1": one CPU; "0-1": unpinned).
# MODE: passthrough=on|off. Prints each run's line, then medians [min-max] per build.
set -euo pipefail
CPUS=$1; N=$2; K=$3; MODE=$4; shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc -O2 -o "$WORK/cpu_per_op" "$HERE/cpu_per_op.c"
for k in $(seq "$K"); do
  for bin in "$@"; do
    store=/dev/shm/pinned-store-$$; mnt=$WORK/mnt
    mkdir -p "$mnt"; rm -rf "$store"
    taskset -c "$CPUS" "$bin" -f -o "passthrough=$MODE" "$store" "$mnt" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
    for round in 1 2; do
      echo "$bin $(taskset -c "$CPUS" "$WORK/cpu_per_op" "$mnt" "$N" "$round" "$pid")"
    done
    umount "$mnt"; wait "$pid" || true; rm -rf "$store"
  done
done | tee "$WORK/runs"
python3 - "$WORK/runs" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t = line.split(); b = t[0]; t = t[1:]
    for i in range(0, len(t), 7):
        for j, what in ((2, "wall"), (4, "self"), (6, "daemon")):
            d[(t[i], what, b)].append(float(t[i + j]))
for key in sorted({k[:2] for k in d}, key=lambda k: (["create", "firststat", "openclose", "unlink"].index(k[0]), k[1])):
    cells = [f"{b}: {statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" for (o, w, b), v in d.items() if (o, w) == key]
    print(f"{key[0]:10} {key[1]:6}", "  ".join(cells))
PY
