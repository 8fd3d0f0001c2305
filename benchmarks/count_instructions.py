"""Instructions per request of the in-process request path, counted by callgrind (valgrind):
a figure the machine's load and memory placement do not move, for comparing two code trees
where timed rounds spread too much to resolve a few percent. Each tree runs in its own
process under ``valgrind --tool=callgrind --instr-atstart=no``; the version is loaded and the
path warmed up uninstrumented, then instrumentation is switched on (``callgrind_control``)
around ``--requests`` calls of ``Retriever.recommend`` (``--mode single``) or
``recommend_batch`` in batches of 16 (``--mode batch``). Both trees run at once (one core each).

    python benchmarks/count_instructions.py --artifacts DIR --interactions FILE \\
        --pythonpath /tmp/gr-base-site --pythonpath /tmp/gr-31-site [--requests 200] [--mode single]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import os, sys, time
from groundrec.online.loadtest import load_histories
from groundrec.online.retrieve import Retriever
from groundrec.online.schemas import UserQuery
from groundrec.online.threads import limit_threads
from groundrec.online.version import load_version
artifacts, interactions, n, mode, flag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
limit_threads(1)
v = load_version(artifacts)
hs = [[i for i in h if i in v.row_of] for h in load_histories(interactions)]
qs = [UserQuery(history=list(h), k=20) for h in hs if h][:n]
r = Retriever(v, fallback="error")
for q in qs[:20]:
    r.recommend(q)
open(flag + ".ready", "w").close()
while not os.path.exists(flag + ".go"):
    time.sleep(0.2)
if mode == "single":
    for q in qs:
        r.recommend(q)
else:
    for s in range(0, len(qs), 16):
        r.recommend_batch(qs[s:s + 16])
open(flag + ".done", "w").close()
while not os.path.exists(flag + ".end"):
    time.sleep(0.2)
"""


def _wait(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}) before {path.name}")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--pythonpath", action="append", required=True, help="a code tree (give two)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--mode", choices=["single", "batch"], default="single")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "worker.py"
        worker.write_text(WORKER)
        runs = []
        for n, tree in enumerate(args.pythonpath):
            flag, out = Path(tmp) / f"t{n}", Path(tmp) / f"t{n}.callgrind"
            env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
            proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                                     sys.executable, str(worker), args.artifacts, args.interactions,
                                     str(args.requests), args.mode, str(flag)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs.append((tree, flag, out, proc))
        for tree, flag, out, proc in runs:
            _wait(flag.with_suffix(".ready"), proc)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
            flag.with_suffix(".go").touch()
        for tree, flag, out, proc in runs:
            _wait(flag.with_suffix(".done"), proc)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            flag.with_suffix(".end").touch()
            proc.wait(600)
        counts = {}
        for tree, flag, out, proc in runs:
            totals = [int(m.group(1)) for f in Path(tmp).glob(out.name + "*")
                      for m in [re.search(r"^totals: (\d+)", f.read_text(), re.M)] if m]
            counts[tree] = sum(totals)
    base = counts[args.pythonpath[0]]
    print(f"{args.requests} requests, mode {args.mode}, version {args.artifacts}")
    for tree, n in counts.items():
        print(f"{tree}: {n:,} instructions, {n / args.requests:,.0f} per request, {n / base:.2%} of the first tree's")


if __name__ == "__main__":
    main()
