"""Experiments on Ray: each run drawn by a worker, every run folder written here.

``RayExecutor.connect(address, workers, device)`` joins Ray (a local one started for the
command, ``auto``, ``ray://HOST:PORT`` or ``HOST:PORT``) and plans the workers: one per GPU
(a Ray actor asking ``num_gpus=1``), or ``workers`` CPU actors that split the cores between
them (``torch.set_num_threads``). Each worker loads the experiment's engines once
(``EngineLoader``, models from its own node's clipdraw cache) and draws many runs; what it
draws (settings, frames, result) comes back to this process, which writes the run folder
with the serial path's own ``RunWriter`` calls (``runs.write_run``): no shared filesystem,
the same folders.

Faults: a run whose worker dies (a killed process, a lost node) or whose drawing raises is
retried on another worker, up to ``MAX_ATTEMPTS`` in all; a dead worker is replaced (a bounded
number of times). A run that fails every attempt is listed in ``Execution.failed`` while the
others go on. Ctrl-C kills the workers, keeps every finished run, and returns.

Ray is imported only here, and only when ``--ray`` is given (the ``ray`` extra).
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..errors import ClipdrawError, first_line
from .runs import Batch, RunSpec, draw, label, write_run

INSTALL_HINT = 'pip install -e ".[ray]" (or pip install "ray[default]")'
LOCAL = "local"          # --ray with no address: a Ray started for this command
MAX_ATTEMPTS = 2         # tries per run, on different workers where there are several
REACH_TIMEOUT = 5.0      # seconds to wait for a cluster's port to answer before calling it unreachable
WAIT_INTERVAL = 0.5      # seconds between the bar's redraws while every worker is busy
IN_FLIGHT = 2            # runs handed to a worker at once: the next one waits in its queue, so the
                         # worker does not idle while the driver writes a run and sends another


def import_ray():
    """The ray module, or one line saying how to install it."""
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise ClipdrawError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def host_and_port(address: str) -> Optional[Tuple[str, int]]:
    """(host, port) of ray://HOST:PORT or HOST:PORT; None for local and auto; one line for
    anything else (a prompt file taken for the address, say)."""
    if address in (LOCAL, "auto"):
        return None
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClipdrawError(f"--ray {address!r} is not a Ray address: give none (a local Ray), auto, "
                            "ray://HOST:PORT or HOST:PORT (write --ray=ADDRESS, or put --ray last, when an argument "
                            "follows it)")
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """Refuse a cluster whose port does not answer, in a few seconds rather than Ray's minute."""
    target = host_and_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=REACH_TIMEOUT):
            pass
    except OSError as e:
        raise ClipdrawError(f"cannot reach the Ray cluster at {address}: {e.strerror or first_line(e)}") from None


@dataclass
class WorkerPlan:
    """How many workers, and what each asks of Ray."""

    count: int
    gpus: int                 # per worker: 1 on GPUs, else 0
    cpus: int                 # per worker
    threads: Optional[int]    # torch threads per CPU worker (None: torch's default, GPU workers)

    def describe(self) -> str:
        workers = f"{self.count} {'GPU' if self.gpus else 'CPU'} worker{'s' if self.count != 1 else ''}"
        if self.gpus:
            return workers
        each = " each" if self.count > 1 else ""
        return f"{workers} ({self.threads} torch thread{'s' if self.threads != 1 else ''}{each})"


def plan_workers(total: Dict[str, float], largest_node_cpus: int, workers: Optional[int], device: str,
                 threads: Optional[int] = None) -> WorkerPlan:
    """One worker per GPU (``workers`` caps it), unless ``device`` is cpu or there is no GPU;
    then ``workers`` (default 1) CPU workers sharing the cluster's cores, each on one node
    (``threads``: torch threads per CPU worker instead of its share of the cores)."""
    if workers is not None and workers < 1:
        raise ClipdrawError(f"--workers must be at least 1, got {workers}")
    gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 0))
    if device not in ("cpu",) and gpus >= 1:
        count = workers or gpus
        if count > gpus:
            raise ClipdrawError(f"--workers {count}: the Ray cluster has {gpus} GPU(s), one per worker")
        return WorkerPlan(count, 1, 1, None)
    if device.startswith("cuda"):
        raise ClipdrawError(f"--device {device}, but the Ray cluster has no GPU")
    count = workers or 1
    if count > cpus:
        raise ClipdrawError(f"--workers {count}: the Ray cluster has {cpus} CPU(s), one at least per worker")
    share = max(1, min(cpus // count, largest_node_cpus))
    return WorkerPlan(count, 0, min(threads or share, share), threads or share)


class RunWorker:
    """A Ray actor's body: the experiment's engines, loaded on first use and kept."""

    def __init__(self, settings, device: str, offline: bool, keep_frames: bool, threads: Optional[int]):
        if threads:
            import torch  # noqa: PLC0415

            torch.set_num_threads(threads)
        from .engines import EngineLoader  # noqa: PLC0415

        self.loader = EngineLoader(settings, device=device, offline=offline, keep_frames=keep_frames)

    def draw(self, spec: RunSpec, keep_frames: bool):
        return draw(self.loader.get(spec.engine), spec, keep_frames)


class RayExecutor:
    """Draws an experiment's runs on Ray workers (``runs.execute(..., executor=)``); a context
    manager that shuts down a Ray it started."""

    in_flight = IN_FLIGHT

    def __init__(self, ray, plan: WorkerPlan, started: bool, log: Callable[[str], None] = print):
        self.ray, self.plan, self.started, self.log = ray, plan, started, log
        self.max_attempts = MAX_ATTEMPTS
        self.replacements = plan.count * MAX_ATTEMPTS   # dead workers replaced, at most, per batch
        self._actor_class = None

    @classmethod
    def connect(cls, address: str = LOCAL, workers: Optional[int] = None, device: str = "auto",
                log: Callable[[str], None] = print, threads: Optional[int] = None) -> "RayExecutor":
        """Join Ray at ``address`` (``LOCAL``: start one for this process; a Ray this process
        already joined is used as it is) and plan the workers (``plan_workers``); one
        ClipdrawError line for bad input: Ray missing, an address that is wrong or does not
        answer, workers that do not fit."""
        if workers is not None and workers < 1:
            raise ClipdrawError(f"--workers must be at least 1, got {workers}")
        ray = import_ray()
        host_and_port(address)
        started = False
        if not ray.is_initialized():
            check_reachable(address)
            import logging  # noqa: PLC0415

            options = dict(logging_level=logging.ERROR, log_to_driver=False)   # the command says what matters
            try:
                if address == LOCAL:
                    ray.init(address="local", include_dashboard=False, **options)
                else:
                    ray.init(address=address, **options)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
                if address == "auto":
                    raise ClipdrawError("--ray auto: no running Ray cluster was found (start one with ray start "
                                        "--head, or give its address)") from None
                raise ClipdrawError(f"--ray {address}: cannot join the Ray cluster: {first_line(e)}") from None
            started = True
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            largest = max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=0)
            plan = plan_workers(ray.cluster_resources(), largest, workers, device, threads)
        except BaseException:
            if started:
                ray.shutdown()
            raise
        log(f"Ray: {plan.describe()}")
        return cls(ray, plan, started, log)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    # ------------------------------------------------------------------ workers

    def start_worker(self, batch: Batch):
        """A new actor for ``batch``'s engines (it loads them on its first run)."""
        if self._actor_class is None:
            self._actor_class = self.ray.remote(RunWorker)
        actor = self._actor_class.options(num_gpus=self.plan.gpus, num_cpus=self.plan.cpus, max_restarts=0)
        source = batch.loader.source
        return actor.remote(batch.loader.settings, source.device, source.offline, batch.keep_frames,
                             self.plan.threads)

    def submit(self, worker, spec: RunSpec, keep_frames: bool):
        """Start ``spec`` on ``worker``: the reference its outcome comes back through."""
        return worker.draw.remote(spec, keep_frames)

    # ------------------------------------------------------------------ the batch

    def run(self, batch: Batch) -> None:
        """Draw ``batch.pending`` on the workers; write each run as it comes back."""
        ray = self.ray
        numbers = iter(range(1 << 30))   # workers by number: a replacement never takes a dead one's
        workers: Dict[int, Any] = {next(numbers): self.start_worker(batch)
                                   for _ in range(min(self.plan.count, len(batch.pending)))}
        replacements = self.replacements
        queue: Deque[Tuple[RunSpec, int]] = collections.deque((spec, 1) for spec in batch.pending)
        tried: Dict[str, set] = collections.defaultdict(set)   # run key -> numbers of the workers that failed it
        running: Dict[Any, Tuple[int, RunSpec, int]] = {}      # reference -> (worker, spec, attempt)
        assigned: Dict[int, List[Any]] = collections.defaultdict(list)   # worker -> its references, oldest first
        idle = [number for _ in range(self.in_flight) for number in workers]   # free slots, one worker's apart
        failed = batch.execution.failed

        def show() -> None:
            busy = len({number for number, _, _ in running.values() if number in workers})
            batch.bar.set_postfix_str(f"failed {len(failed)}, workers busy {busy}/{len(workers)}")

        def retry_or_fail(spec: RunSpec, attempt: int, why: str) -> None:
            if attempt < self.max_attempts:
                queue.appendleft((spec, attempt + 1))
            else:
                failed[spec.key] = why
                self.log(f"{label(spec)} failed {attempt} time(s): {why}")

        try:
            while queue or running:
                for number in list(idle):   # each free slot takes the first run its worker has not failed
                    pick = next((n for n, (spec, _) in enumerate(queue)
                                 if number not in tried[spec.key] or set(workers) <= tried[spec.key]), None)
                    if pick is not None:
                        spec, attempt = queue[pick]
                        del queue[pick]
                        idle.remove(number)
                        reference = self.submit(workers[number], spec, batch.keep_frames)
                        running[reference] = (number, spec, attempt)
                        assigned[number].append(reference)
                show()
                if not running:   # work left but no worker: every one died and none may replace it
                    for spec, _ in queue:
                        failed[spec.key] = "no worker left to run it"
                    break
                done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_INTERVAL)
                for reference in done:
                    if reference not in running:   # dropped with its dead worker below
                        continue
                    number, spec, attempt = running.pop(reference)
                    try:
                        outcome = ray.get(reference)
                    except ray.exceptions.RayTaskError as e:   # drawing raised; the worker lives on
                        assigned[number].remove(reference)
                        tried[spec.key].add(number)
                        idle.append(number)
                        cause = e.cause if isinstance(e.cause, BaseException) else e
                        retry_or_fail(spec, attempt, f"{type(cause).__name__}: {first_line(cause)}")
                        continue
                    except ray.exceptions.RayError as e:   # the worker died: replace it, retry elsewhere
                        ray.kill(workers.pop(number), no_restart=True)
                        idle[:] = [n for n in idle if n != number]
                        if replacements > 0:
                            replacements -= 1
                            fresh = next(numbers)
                            workers[fresh] = self.start_worker(batch)
                            idle.extend([fresh] * self.in_flight)
                        lost = assigned.pop(number)   # its oldest run was drawing; the others only waited
                        for other in reversed(lost[1:]):
                            entry = (number, spec, attempt) if other == reference else running.pop(other)
                            queue.appendleft(entry[1:])   # no attempt spent
                        if lost[0] != reference:
                            number, spec, attempt = running.pop(lost[0])
                        tried[spec.key].add(number)
                        retry_or_fail(spec, attempt, f"its worker died ({type(e).__name__}: {first_line(e, 120)})")
                        continue
                    assigned[number].remove(reference)
                    idle.append(number)
                    write_run(batch, spec, outcome)
                    del outcome
        except KeyboardInterrupt:
            batch.execution.interrupted = True
        finally:
            for worker in workers.values():   # also stops the runs still drawing
                ray.kill(worker, no_restart=True)
            show()
