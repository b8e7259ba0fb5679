"""A toy run on the CPU beside other busy processes: how much the thread settings matter.

torch starts one OpenMP thread per core, and those threads spin while they wait for each other.
With every core already busy (a benchmark, a second run), the spinning steals the time the other
threads need. This times one `clipdraw ... --model toy` run as a subprocess: alone, then beside
``--busy`` one-thread processes doing matrix products, with the default settings, with
``OMP_NUM_THREADS=1`` and with ``OMP_WAIT_POLICY=PASSIVE``; each figure with its ratio to the
run alone.

    python benchmarks/cpu_threads.py --iters 100 --busy 2
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "cli.py"   # the repository's entry point


def busy(seconds: float) -> None:
    import torch   # noqa: PLC0415  (in the child only)
    torch.set_num_threads(1)
    a = torch.randn(384, 384)
    end = time.time() + seconds
    while time.time() < end:
        a = torch.tanh(a @ a)


def timed_run(iters: int, out: str, **env: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(CLI), "a red circle", "--model", "toy", "--iters", str(iters),
                    "--out", out, "--quiet"], check=True, env={**os.environ, **env}, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy one-thread processes beside it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        alone = timed_run(args.iters, out)
        print(f"{args.iters} toy iterations, {os.cpu_count()} cores, torch's default threads")
        print(f"| setting | alone (s) | beside {args.busy} busy processes (s) | ratio to alone |")
        print("| --- | --- | --- | --- |")
        for name, env in (("default", {}), ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}),
                          ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})):
            own = alone if not env else timed_run(args.iters, out, **env)
            workers = [multiprocessing.Process(target=busy, args=(600,), daemon=True) for _ in range(args.busy)]
            for w in workers:
                w.start()
            time.sleep(1)
            try:
                beside = timed_run(args.iters, out, **env)
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.join()
            print(f"| {name} | {own:.1f} | {beside:.1f} | {beside / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
