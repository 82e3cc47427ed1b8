#!/bin/bash
# Split a dataset archive into parts small enough to send to a device machine one per call.
# usage: benchmarks/split_dataset.sh ARCHIVE OUTDIR [PART_MIB]
#   writes OUTDIR/part.1, part.2, ... of at most PART_MIB MiB (default 55) and
#   OUTDIR/parts.sha256; join them again with `cat OUTDIR/part.* > archive` (gpu_check.sh
#   does that with --parts). Parts are numbered so that `part.*` sorts in order (up to 9).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 ARCHIVE OUTDIR [PART_MIB]" >&2
  exit 2
fi
archive=$1 out=$2 mib=${3:-55}
[ -f "$archive" ] || { echo "error: $archive: no such file" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/part.*
# -L: the archive is often a symbolic link to a shared copy; its own size would be the link's
size=$(stat -L -c %s "$archive")
parts=$(( (size + mib * 1048576 - 1) / (mib * 1048576) ))
if [ "$parts" -gt 9 ]; then
  echo "error: $parts parts of $mib MiB; pass a larger PART_MIB" >&2
  exit 1
fi
split -b "${mib}M" -d -a 1 "$archive" "$out/part."
# split numbers from 0: rename to 1..N so that the names match the calls that send them,
# counting the files split wrote (renaming downwards never overwrites a part not yet moved)
written=$(find "$out" -maxdepth 1 -name 'part.[0-9]' | wc -l)
for ((i = written - 1; i >= 0; i--)); do mv "$out/part.$i" "$out/part.$((i + 1))"; done
sha256sum "$archive" | awk '{print $1}' > "$out/parts.sha256"
ls -l "$out"
