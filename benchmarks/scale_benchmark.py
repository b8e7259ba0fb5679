"""Runs per minute of an experiment in the toy world: one after another in this process, on Ray
with one worker, and on Ray with two, in one run, with the ratios the issue targets.

What is measured
----------------
The same batch of runs (``--prompts`` toy captions x ``--seeds`` seeds, the optimizer at
``--iters`` steps and ``--cutn`` cutouts, final.png and run.json per run) goes through
``clipdraw.evaluate.runs.execute`` three times, into three fresh folders:

* ``serial``: the default executor, in this process, with a thread per core, the engine
  loaded inside the timed span;
* ``ray x1``: ``RayExecutor`` with one CPU worker (a thread per core);
* ``ray x2``: two CPU workers, the cores split between them (``--workers`` changes the list).

``--threads K`` runs every run at K torch threads instead (serial and each worker): with
``--threads 1`` the ratios compare the executors alone, without the threading of one run
(which on a shared machine can cost more than it gives).

Runs per minute = runs / the wall time of ``execute``, which for Ray includes starting the
actors and loading the engine in each (the local Ray itself is started once, before, and its
start-up is printed apart). Beside it: the first run's latency, the steady rate after each
worker's first run, and the driver's time to write one run folder (``runs.write_run``), which
bounds what any number of workers can reach: ``60 / write seconds`` runs per minute.
The folders' final.png files are compared with serial's: identical bytes are expected at the
same torch thread count (``ray x1``, or every row with ``--threads``).

Targets (issue 19): ray x1 >= 0.9 x serial; ray x2 >= 1.6 x ray x1.

How to run
----------
    pip install -e ".[ray]"
    python benchmarks/scale_benchmark.py                       # 18 runs, 80 steps each
    python benchmarks/scale_benchmark.py --threads 1           # one thread per run everywhere
    python benchmarks/scale_benchmark.py --prompts 8 --seeds 3 --iters 20 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow square", "a red square",
            "a blue circle", "a green circle", "a yellow triangle", "a red triangle", "a blue triangle",
            "a green square", "a yellow circle"]


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=6, help="toy captions (at most %d)" % len(CAPTIONS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=80)
    parser.add_argument("--cutn", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every run, serial and on each worker  [default: serial every core, "
                             "each worker its share]")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to measure, comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def measure(name, specs, out, settings, executor=None):
    """One pass of ``execute`` into ``out``: its figures."""
    from clipdraw.evaluate import runs
    from clipdraw.evaluate.engines import EngineLoader

    writes, finished_at = [], []
    real_write = runs.write_run

    def timed_write(batch, spec, outcome):
        start = time.perf_counter()
        real_write(batch, spec, outcome)
        writes.append(time.perf_counter() - start)
        finished_at.append(time.perf_counter())

    real_finished = runs.Batch.finished

    def note_finished(batch, spec):   # the serial loop's runs end here too
        real_finished(batch, spec)
        if executor is None:
            finished_at.append(time.perf_counter())

    runs.write_run, runs.Batch.finished = timed_write, note_finished
    if executor is not None:
        import clipdraw.evaluate.ray_exec as ray_exec
        ray_exec.write_run = timed_write
    try:
        start = time.perf_counter()
        execution = runs.execute(specs, out, EngineLoader(settings, device="cpu", keep_frames=False),
                                 keep_frames=False, progress=False, log=lambda _: None, executor=executor)
        wall = time.perf_counter() - start
    finally:
        runs.write_run, runs.Batch.finished = real_write, real_finished
        if executor is not None:
            ray_exec.write_run = real_write
    done = len(execution.records)
    workers = executor.plan.count if executor is not None else 1
    steady = None
    if len(finished_at) > workers:   # after each worker's first run: model loading left out
        span = finished_at[-1] - finished_at[workers - 1]
        steady = 60 * (len(finished_at) - workers) / span if span > 0 else None
    return {"name": name, "runs": done, "failed": len(execution.failed), "seconds": round(wall, 2),
            "runs_per_minute": round(60 * done / wall, 2), "first_run_seconds": round(finished_at[0] - start, 2),
            "steady_runs_per_minute": round(steady, 2) if steady else None,
            "write_seconds_per_run": round(statistics.median(writes), 4) if writes else None}


def main():
    args = arguments()
    import torch

    torch.set_num_threads(args.threads or os.cpu_count())
    try:
        import ray
    except ImportError:
        sys.exit('needs Ray: pip install -e ".[ray]"')
    from clipdraw.evaluate.compare import plan
    from clipdraw.evaluate.datasets import Item
    from clipdraw.evaluate.engines import EngineSettings
    from clipdraw.evaluate.ray_exec import RayExecutor
    from clipdraw.evaluate.runs import open_experiment

    items = [Item(id=caption.replace(" ", "-"), prompt=caption) for caption in CAPTIONS[:args.prompts]]
    specs = plan(items, ["optimize"], args.seeds)
    settings = EngineSettings(model="toy", iters=args.iters, cutn=args.cutn)
    cores = os.cpu_count()
    print(f"{len(specs)} toy runs ({args.prompts} prompts x {args.seeds} seeds), optimizer at {args.iters} steps, "
          f"cutn {args.cutn}; {cores} cores; torch threads per run: "
          f"{args.threads or f'serial {cores}, each worker its share of the cores'}")
    results = []
    with tempfile.TemporaryDirectory(prefix="scale-benchmark-") as root:
        def folder(name):
            out = Path(root) / name
            open_experiment(out, "batch", settings.record())
            return out

        results.append(measure("serial", specs, folder("serial"), settings))
        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            for count in (int(n) for n in args.workers.split(",")):
                executor = RayExecutor.connect(workers=count, device="cpu", log=lambda _: None, threads=args.threads)
                results.append(measure(f"ray x{count}", specs, folder(f"ray-{count}"), settings, executor))
        finally:
            ray.shutdown()
        serial_images = {p.relative_to(Path(root) / "serial"): p.read_bytes()
                         for p in (Path(root) / "serial").glob("runs/*/*/*/final.png")}
        for result in results[1:]:
            out = Path(root) / f"ray-{result['name'].split('x')[1]}"
            result["final_png_identical_to_serial"] = sum(
                (out / name).read_bytes() == data for name, data in serial_images.items() if (out / name).is_file())

    print(f"local Ray start-up: {ray_start:.1f} s (once per command; not in the rates below)")
    print(f"{'':10} {'runs/min':>9} {'seconds':>8} {'first run s':>12} {'steady runs/min':>16} {'write s/run':>12} "
          f"{'same png':>9}")
    for r in results:
        print(f"{r['name']:10} {r['runs_per_minute']:9.2f} {r['seconds']:8.1f} {r['first_run_seconds']:12.1f} "
              f"{r['steady_runs_per_minute'] or float('nan'):16.2f} {r['write_seconds_per_run'] or float('nan'):12.4f} "
              f"{r.get('final_png_identical_to_serial', len(specs)):>9}")
    by_name = {r["name"]: r for r in results}
    ratios = {}
    if "ray x1" in by_name:
        ratios["ray x1 / serial"] = by_name["ray x1"]["runs_per_minute"] / by_name["serial"]["runs_per_minute"]
        print(f"ray x1 / serial: {ratios['ray x1 / serial']:.2f} (target >= 0.9)")
    if "ray x1" in by_name and "ray x2" in by_name:
        ratios["ray x2 / ray x1"] = by_name["ray x2"]["runs_per_minute"] / by_name["ray x1"]["runs_per_minute"]
        print(f"ray x2 / ray x1: {ratios['ray x2 / ray x1']:.2f} (target >= 1.6)")
    writes = [r["write_seconds_per_run"] for r in results if r["write_seconds_per_run"]]
    if writes:
        print(f"driver writing: {statistics.median(writes):.4f} s per run, a ceiling of "
              f"{60 / statistics.median(writes):.0f} runs/min for any number of workers")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "ray_start_seconds":
                                         ray_start, "results": results, "ratios": ratios}, indent=2, default=str))


if __name__ == "__main__":
    main()
