"""Experiments on Ray (``--ray``): the same run folders and reports as serial, a killed worker's
run retried, a run failing every attempt reported while the others finish, an interrupted
driver resumed, and bad input refused in one line.

One local Ray with 2 CPUs serves the whole module (``local_ray``), started only by the tests
that draw on it; the toy world at a few iterations keeps every run short. The worker plan and
the scheduling's retry rules are also checked without Ray (``plan_workers``, ``FakeRay``)."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipdraw.errors import ClipdrawError

PROMPTS = "[single]\na red circle\na blue square\n[relation]\na red circle above a blue square\n"
TOY = ["--model", "toy", "--iters", "3", "--cutn", "2", "--device", "cpu", "--quiet"]


@contextlib.contextmanager
def torch_threads(count: int):
    """Serial runs at the workers' thread count: CPU reductions split across another number of
    threads round differently in the last bits (the toy judge's scores do)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_main(*args) -> int:
    """clipdraw's console entry point in this process: its exit code."""
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(PROMPTS)
    return path


def files_of(out: Path, pattern: str) -> dict:
    """{path under out: bytes} of the files matching ``pattern``."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob(pattern))}


def rows_without(path: Path, *columns: str) -> list:
    """A CSV's rows without the columns that differ between any two runs (times, paths)."""
    return [{k: v for k, v in row.items() if k not in columns} for row in csv.DictReader(path.open())]


def test_compare_on_ray_gives_the_serial_images_and_report(local_ray, tmp_path, prompts):
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    args = ["compare", prompts, "--engines", "optimize,transformer", *TOY]
    with torch_threads(1):   # each of 2 workers on 2 CPUs has one thread; the driver scores the report
        assert run_main(*args, "--out", serial) == 0
        assert run_main(*args, "--out", on_ray, "--ray", "--workers", "2") == 0
    images = files_of(serial, "runs/*/*/*/final.png")
    assert len(images) == 3 * 2 and files_of(on_ray, "runs/*/*/*/final.png") == images   # bit-identical
    for name in ("compare_images.csv", "compare_summary.csv"):
        assert rows_without(on_ray / name, "seconds_per_image", "file") == \
            rows_without(serial / name, "seconds_per_image", "file")
    assert sorted(p.name for p in on_ray.iterdir()) == sorted(p.name for p in serial.iterdir())


def test_batch_on_ray_keeps_frames_and_matches_serial_then_resumes(local_ray, tmp_path, prompts, capsys):
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    args = ["batch", prompts, "--seeds", "2", "--keep-frames", "--save-every", "1", *TOY]
    with torch_threads(1):
        assert run_main(*args, "--out", serial) == 0
    assert run_main(*args, "--out", on_ray, "--ray", "--workers", "2") == 0
    drawn = files_of(serial, "runs/*/*/*/*.png")
    # final.png and frames 0 (the toy world's blank canvas), 1, 2, 3
    assert len(drawn) == 3 * 2 * (1 + 4) and files_of(on_ray, "runs/*/*/*/*.png") == drawn   # frames too
    assert files_of(on_ray, "runs/*/*/*/progress.gif") == files_of(serial, "runs/*/*/*/progress.gif")
    rows = rows_without(on_ray / "batch.csv", "seconds", "image")
    assert rows == rows_without(serial / "batch.csv", "seconds", "image")
    assert [r["status"] for r in rows] == ["finished"] * 6
    summary = json.loads((on_ray / "batch.json").read_text())
    assert summary["finished"] == 6 and summary["failed"] == 0 and summary["notes"] == []
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in on_ray.glob("runs/*/*/*/run.json")}
    assert run_main(*args, "--out", on_ray, "--ray", "--workers", "2") == 0
    assert "6 of 6 run(s) already finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_killed_workers_runs_are_retried_elsewhere_and_one_failing_every_attempt_is_reported(
        local_ray, tmp_path, prompts, capsys, monkeypatch):
    from clipdraw.evaluate.ray_exec import MAX_ATTEMPTS, RayExecutor

    real_submit, submitted = RayExecutor.submit, []

    def kill(self, worker, spec, keep_frames):   # mid-experiment: each run is on its way to its worker
        reference = real_submit(self, worker, spec, keep_frames)
        submitted.append((spec.prompt, worker))
        if spec.prompt == "a blue square" or len(submitted) == 1:   # every worker of that one, and the first
            local_ray.kill(worker, no_restart=True)
        return reference

    monkeypatch.setattr(RayExecutor, "submit", kill)
    monkeypatch.setattr(RayExecutor, "in_flight", 1)   # the run killed is the one drawing
    out = tmp_path / "out"
    args = ["batch", prompts, *TOY, "--out", out, "--ray", "--workers", "2"]
    assert run_main(*args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "1 run(s) failed on every attempt" in err[0] and "a-blue-square" in err[0]
    first_prompt, first_worker = submitted[0]
    tries = {prompt: [w for p, w in submitted if p == prompt] for prompt, _ in submitted}
    assert first_prompt == "a red circle" and len(tries["a red circle"]) == 2
    assert tries["a red circle"][1] is not first_worker   # retried once, on another worker
    assert len(tries["a blue square"]) == MAX_ATTEMPTS
    rows = {r["prompt"]: r for r in csv.DictReader((out / "batch.csv").open())}
    assert rows["a blue square"]["status"] == "failed" and "worker died" in rows["a blue square"]["error"]
    assert rows["a red circle"]["status"] == rows["a red circle above a blue square"]["status"] == "finished"
    assert not (out / "runs" / "optimize" / "a-blue-square").exists()
    monkeypatch.setattr(RayExecutor, "submit", real_submit)
    assert run_main(*args) == 0   # run again: only the failed run is drawn
    assert "2 of 3 run(s) already finished" in capsys.readouterr().err


def test_an_interrupted_driver_keeps_finished_runs_and_resumes(local_ray, tmp_path, prompts, capsys, monkeypatch):
    from clipdraw.evaluate.ray_exec import RayExecutor

    out = tmp_path / "out"
    real_submit = RayExecutor.submit

    def ctrl_c_once_a_run_is_written(self, worker, spec, keep_frames):   # the other runs are in flight
        if list(out.glob("runs/*/*/*/run.json")):
            raise KeyboardInterrupt
        return real_submit(self, worker, spec, keep_frames)

    monkeypatch.setattr(RayExecutor, "submit", ctrl_c_once_a_run_is_written)
    args = ["batch", prompts, "--seeds", "2", *TOY, "--out", out, "--ray", "--workers", "2"]
    assert run_main(*args) == 130
    assert "interrupted: the finished runs are kept and reported" in capsys.readouterr().err
    kept = sorted(out.glob("runs/*/*/*/run.json"))
    assert len(kept) == 1 and len(list(out.glob("runs/*/*/*"))) == 1   # nothing half-written
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert sorted(r["status"] for r in rows) == ["finished"] + ["to do"] * 5
    assert any("Only 1 of 6" in n for n in json.loads((out / "batch.json").read_text())["notes"])
    stamp = kept[0].stat().st_mtime_ns
    monkeypatch.setattr(RayExecutor, "submit", real_submit)
    assert run_main(*args) == 0
    assert "1 of 6 run(s) already finished" in capsys.readouterr().err
    assert kept[0].stat().st_mtime_ns == stamp and len(list(out.glob("runs/*/*/*/run.json"))) == 6


# --------------------------------------------------------------------------- bad input


def one_line(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0], err
    return err[0]


def test_ray_missing_is_one_line_with_the_install_command(tmp_path, prompts, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    assert run_main("batch", prompts, *TOY, "--out", tmp_path / "out", "--ray") == 2
    one_line(capsys, 'pip install -e ".[ray]"')
    assert not (tmp_path / "out").exists()


def test_bad_workers_and_addresses_are_one_line(local_ray, tmp_path, prompts, capsys):
    out = tmp_path / "out"
    assert run_main("batch", prompts, *TOY, "--out", out, "--ray", "--workers", "0") == 2
    one_line(capsys, "--workers")
    assert run_main("batch", prompts, *TOY, "--out", out, "--workers", "2") == 2
    one_line(capsys, "--workers goes with --ray")
    assert run_main("batch", prompts, *TOY, "--out", out, "--ray", "--workers", "3") == 2
    one_line(capsys, "the Ray cluster has 2 CPU(s)")
    assert run_main("batch", prompts, *TOY, "--out", out, "--ray", "head-node") == 2
    one_line(capsys, "is not a Ray address")
    assert not out.exists()


def test_an_unreachable_cluster_is_one_line_in_a_fresh_process(tmp_path, prompts):
    pytest.importorskip("ray")
    from clipdraw.evaluate.ray_exec import check_reachable

    with pytest.raises(ClipdrawError, match="cannot reach the Ray cluster at ray://127.0.0.1:1"):
        check_reachable("ray://127.0.0.1:1")
    process = subprocess.run([sys.executable, "-m", "clipdraw", "batch", str(prompts), *TOY, "--out",
                              str(tmp_path / "out"), "--ray", "127.0.0.1:1"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert process.returncode == 2
    assert process.stderr.strip().splitlines()[-1].startswith("clipdraw: error: cannot reach the Ray cluster")
    assert len(process.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_workers_one_per_gpu_else_cpu_workers_sharing_the_cores():
    from clipdraw.evaluate.ray_exec import plan_workers

    on_gpus = plan_workers({"CPU": 32, "GPU": 4}, 16, None, "auto")
    assert (on_gpus.count, on_gpus.gpus, on_gpus.threads) == (4, 1, None)
    assert plan_workers({"CPU": 32, "GPU": 4}, 16, 2, "auto").count == 2
    on_cpus = plan_workers({"CPU": 32, "GPU": 4}, 16, 4, "cpu")   # --device cpu leaves the GPUs alone
    assert (on_cpus.count, on_cpus.gpus, on_cpus.cpus, on_cpus.threads) == (4, 0, 8, 8)
    assert plan_workers({"CPU": 32}, 16, None, "auto").threads == 16   # one worker: a node's cores at most
    for total, workers, device, message in (({"CPU": 32, "GPU": 4}, 5, "auto", "has 4 GPU"),
                                            ({"CPU": 2}, 3, "auto", "has 2 CPU"),
                                            ({"CPU": 8}, None, "cuda", "no GPU")):
        with pytest.raises(ClipdrawError, match=message):
            plan_workers(total, 8, workers, device)


class FakeRay:
    """What ``RayExecutor.run`` asks of Ray, with outcomes a test decides: each submitted run's
    reference is ready at once, and ``outcome(spec, attempt)`` returns its result or the
    exception ``get`` raises (a dead worker: ``ActorDiedError``; a raising run: ``RayTaskError``)."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            def __init__(self, cause):
                super().__init__(str(cause))
                self.cause = cause

        class ActorDiedError(RayError):
            pass

    def __init__(self):
        self.ready, self.killed = [], []

    def wait(self, references, num_returns, timeout):
        return [next(r for r in self.ready if r in references)], []

    def get(self, reference):
        self.ready.remove(reference)
        if isinstance(reference[1], BaseException):
            raise reference[1]
        return reference[1]

    def kill(self, worker, no_restart):
        self.killed.append(worker)


def test_a_dead_workers_waiting_run_spends_no_attempt_and_a_raising_run_moves_on(monkeypatch, tmp_path):
    from clipdraw.evaluate import ray_exec
    from clipdraw.evaluate.runs import Batch, Execution, RunSpec
    from clipdraw.evaluate.ray_exec import RayExecutor, WorkerPlan

    fake, workers, submitted = FakeRay(), iter(range(100)), []
    specs = [RunSpec(f"optimize/{name}/seed-0", "optimize", name, 0) for name in ("a", "b", "c")]

    def submit(self, worker, spec, keep_frames):
        submitted.append((spec.prompt, worker))
        tries = [w for p, w in submitted if p == spec.prompt]
        if worker == 0:   # the first worker dies holding "a" (drawing) and "c" (waiting behind it)
            outcome = fake.exceptions.ActorDiedError("worker 0 died")
        elif spec.prompt == "c" and len(tries) == 2:   # then "c" raises once: its first attempt, were it spent
            outcome = fake.exceptions.RayTaskError(MemoryError("out of memory"))
        elif spec.prompt == "a":   # and the run it was drawing fails once more, wherever it goes
            outcome = fake.exceptions.ActorDiedError(f"worker {worker} died")
        else:
            outcome = f"drawn {spec.prompt}"
        reference = (len(submitted), outcome)
        fake.ready.append(reference)
        return reference

    written = []
    monkeypatch.setattr(RayExecutor, "start_worker", lambda self, batch: next(workers))
    monkeypatch.setattr(RayExecutor, "submit", submit)
    monkeypatch.setattr(ray_exec, "write_run", lambda batch, spec, outcome: written.append((spec.prompt, outcome)))
    executor = RayExecutor(fake, WorkerPlan(2, 0, 1, 1), started=False, log=lambda _: None)
    execution = Execution()

    class Bar:
        def set_postfix_str(self, text):
            pass

    executor.run(Batch(specs, tmp_path, {}, None, False, False, Bar(), execution))
    assert [prompt for prompt, _ in submitted[:3]] == ["a", "b", "c"] and submitted[0][1] == submitted[2][1] == 0
    assert list(execution.failed) == ["optimize/a/seed-0"] and "died" in execution.failed["optimize/a/seed-0"]
    assert sorted(written) == [("b", "drawn b"), ("c", "drawn c")]   # "c" only waited: no attempt spent
    tries_of_c = [w for p, w in submitted if p == "c"]
    assert len(tries_of_c) == 3 and tries_of_c[1] != tries_of_c[2]   # after raising, on another worker
    assert 0 in fake.killed and not execution.interrupted
