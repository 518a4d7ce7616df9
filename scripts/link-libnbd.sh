#!/usr/bin/env bash
# Make Debian's libnbd binding (python3-libnbd) importable in the venv: it is not on PyPI (the
# PyPI package "nbd" is unrelated), and the venv has no system site packages. The extension is
# built for CPython 3.11, the venv's version; symlinks follow apt upgrades of the package.
# Usage: scripts/link-libnbd.sh <venv python>
set -euo pipefail
python="${1:?usage: $0 <venv python>}"
source_dir=/usr/lib/python3/dist-packages
purelib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
module="$source_dir/libnbdmod$suffix"
if [ ! -e "$source_dir/nbd.py" ] || [ ! -e "$module" ]; then
  echo "python3-libnbd for $suffix is not installed in $source_dir (apt-get install python3-libnbd)" >&2
  exit 1
fi
ln -sfn "$source_dir/nbd.py" "$purelib/nbd.py"
ln -sfn "$module" "$purelib/libnbdmod$suffix"
"$python" -c 'import nbd; nbd.NBD()'
