"""One line per run folder under a root: status, last step, step time, GPU memory, evals.

Reads the logs with ``pkpo.analysis`` (deduplicated records, run status), as the report does.
"""

from __future__ import annotations

import sys

from pkpo import analysis as A


def summarise(run: A.RunLog) -> str:
    train = [r for r in run.records if r["event"] == "train"]
    last = train[-1] if train else {}
    evals = " ".join(
        f"{r['step']}:{r['pass@1']:.3f}/{r.get('pass@16', -1):.3f}"
        for r in run.records
        if r["event"] == "eval"
    )
    return (
        f"{run.run} {run.status} step {last.get('step')} "
        f"s/step {last.get('time/step', -1):.1f} sample {last.get('time/sample', -1):.1f} "
        f"update {last.get('time/update', -1):.1f} gpu {last.get('gpu_reserved_peak_gib', -1):.1f}"
        f" GiB entropy {last.get('entropy', -1):.2f} eval pass@1/pass@16 {evals}"
    )


if __name__ == "__main__":
    for run in A.scan_runs(sys.argv[1:]):
        print(summarise(run))
