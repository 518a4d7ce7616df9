"""Run the benchmarks: ``python -m bench`` (all, full), ``--smoke`` (short, results under
.build/bench-smoke so the committed full results stay), ``--only NAME`` (one group, repeatable).

Groups that need a hypervisor run on the system tests' own libvirtd (tests/system/daemon.py),
started here once and stopped at the end, never the machine's. After a full run the table in
bench/README.md is regenerated from bench/results/*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from pathlib import Path
from types import ModuleType

from bench import backups, fleet, overhead, responsiveness, retention, table
from bench.guests import test_libvirtd
from bench.record import RESULTS, SMOKE_RESULTS, Recorder

GROUPS: dict[str, ModuleType] = {
    # fleet last: the longest, and the one most likely to be cut short
    m.NAME: m
    for m in (overhead, backups, responsiveness, retention, fleet)
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="short runs (CI): figures only")
    parser.add_argument("--only", action="append", choices=sorted(GROUPS), help="run this group")
    parser.add_argument("--out", type=Path, help="where results go (default by mode)")
    args = parser.parse_args(argv)
    out: Path = args.out or (SMOKE_RESULTS if args.smoke else RESULTS)
    chosen = [GROUPS[n] for n in (args.only or GROUPS)]
    failed = []
    with test_libvirtd(any(m.NEEDS_LIBVIRTD for m in chosen)) as uri:
        for module in chosen:
            print(f"== {module.NAME}: {module.TITLE}{' (smoke)' if args.smoke else ''}", flush=True)
            rec = Recorder(module.NAME, module.TITLE, args.smoke, out, uri)
            try:
                asyncio.run(module.run(rec, args.smoke))
            except Exception:
                traceback.print_exc()
                failed.append(module.NAME)
                continue
            print(f"   -> {rec.write()}", flush=True)
    if not args.smoke and not args.out:
        table.write_readme(RESULTS)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
