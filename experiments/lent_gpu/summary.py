"""One line per run folder under a root: last step, step time, GPU memory, held-out evals."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarise(events: Path) -> str:
    last, evals, status = {}, [], "running"
    for line in events.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        if event["event"] == "train":
            last = event
        elif event["event"] == "eval":
            evals.append(f"{event['step']}:{event['pass@1']:.3f}/{event.get('pass@16', -1):.3f}")
        elif event["event"] == "end":
            status = event["status"]
    return (
        f"{events.parent.name} {status} step {last.get('step')} "
        f"s/step {last.get('time/step', -1):.1f} sample {last.get('time/sample', -1):.1f} "
        f"update {last.get('time/update', -1):.1f} gpu {last.get('gpu_reserved_peak_gib', -1):.1f}"
        f" GiB entropy {last.get('entropy', -1):.2f} eval pass@1/pass@16 {' '.join(evals)}"
    )


if __name__ == "__main__":
    for path in sorted(Path(sys.argv[1]).glob("**/events.jsonl")):
        print(summarise(path))
