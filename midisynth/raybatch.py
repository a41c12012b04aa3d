"""Corpus rendering on Ray — what `midisynth render FOLDER -o OUT --ray` runs.

The driver plans the outputs exactly as a local run does (``batch.plan_outputs``), cuts the tasks
into the same fixed groups (``batch.render_groups``) and hands groups to long-lived worker actors,
each of which loads the model once and runs the local ``batch.render_files`` on its group. A
group's bytes depend only on its members and the options, so a file comes out byte-identical
whichever worker renders it and in whatever order.

    driver: plan → groups ─▶ queue ─▶ idle actor ─▶ render_files(group) ─▶ results + manifest line
                                ▲                         │
                                └── worker died: re-queued (≤ max_attempts), actor replaced

Robustness: outputs are written atomically by the worker (temporary file + rename; a killed
worker's leftovers are removed when the file is written again), a file that *fails* (bad MIDI) is
recorded once and not retried, a group whose worker *dies* goes to another worker, and after
``max_attempts`` deaths its files are recorded as failed. ``manifest.jsonl`` in the output folder
gets one line per file (appended, so a restarted ``--skip-existing`` run extends it).

Ray joins the cluster named by ``RAY_ADDRESS`` (Ray's own convention) or starts a local one bound
to 127.0.0.1. Workers need the same ``midisynth`` installed and, for a model folder or outputs, a
path every node can reach (a shared filesystem); registered model names download on each node.
``ray`` is an optional extra (``extras.pip_install('ray')``), imported only here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .batch import FileResult, FileTask, OutputOptions, render_files, render_groups
from .render import DEFAULT_BATCH_SIZE, RenderOptions

FAULT_ENV = "MIDISYNTH_RAY_FAULT"  # tests only: a worker exits mid-write on a file named so


@dataclass(frozen=True)
class RayOptions:
    """How the work is spread over Ray."""

    workers: int | None = None  # actors; None = the cluster's CPUs // threads (GPUs on GPU runs)
    threads: int = 1  # torch threads per CPU worker (its num_cpus)
    address: str | None = None  # None = RAY_ADDRESS, else a new local cluster on 127.0.0.1
    max_attempts: int = 3  # worker deaths a group survives before its files are recorded failed


@dataclass
class Progress:
    """What the driver reports after each group: files and audio seconds so far."""

    files_done: int
    files_total: int
    audio_seconds: float
    elapsed: float


def import_ray():
    try:
        import ray
    except ImportError:
        from .extras import pip_install

        raise ImportError(f"--ray needs Ray: {pip_install('ray')} (or pip install ray)") from None
    return ray


def model_fingerprint(loaded) -> str:
    """sha256 identifying the weights: of the files' sha256 list in config.json when the model
    came from a folder, else of the parameters themselves (built-in models)."""
    files = loaded.meta.get("files") if loaded.meta else None
    h = hashlib.sha256()
    if files:
        h.update(json.dumps(files, sort_keys=True).encode())
    else:
        for k, v in sorted(loaded.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class RenderWorker:
    """A Ray actor (decorated at run time, so this module imports without Ray): loads the model
    once, then renders groups of files with the local ``render_files``."""

    def __init__(self, model: str | None, device: str, dtype: str, threads: int) -> None:
        import torch

        from .weights import load_model

        torch.set_num_threads(max(1, threads))
        self.loaded = load_model(model, device=device, dtype=dtype)
        self.label = f"{socket.gethostname()}:{os.getpid()}"

    def info(self) -> dict[str, Any]:
        return {"worker": self.label, "model": self.loaded.name}

    def render(
        self, tasks: list[FileTask], options: RenderOptions, out: OutputOptions, attempt: int
    ) -> tuple[list[FileResult], str]:
        fault = os.environ.get(FAULT_ENV)
        progress = None
        if fault and attempt == 0 and any(t.src.name == fault for t in tasks):

            def progress(done: float, total: float) -> None:  # outputs are half-written now
                os._exit(17)

        return render_files(self.loaded, tasks, options, out, progress=progress), self.label


def _connect(ray, opts: RayOptions, num_cpus: int | None) -> bool:
    """ray.init; True when this call started a local cluster (the driver shuts it down)."""
    import logging

    address = opts.address or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, **common)
        return False
    # A local cluster stays on loopback: nothing else needs to reach it. Its workers *are* the
    # job, so they run at normal priority (Ray's default niceness 15 starves them on a busy
    # machine: importing torch took 80 s instead of 4 beside two training runs).
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        _system_config={"worker_niceness": 0},
        **common,
    )
    return True


def _default_workers(ray, gpu: bool, threads: int) -> int:
    res = ray.cluster_resources()
    if gpu:
        return max(1, int(res.get("GPU", 0)))
    return max(1, int(res.get("CPU", 1)) // max(1, threads))


def _manifest_line(
    r: FileResult, status: str, loaded, fingerprint: str, options: RenderOptions, **extra
) -> dict:
    return {
        "input": str(r.task.src),
        "output": str(r.task.dst),
        "status": status,
        "seconds": round(r.seconds, 3),
        "model": loaded.name,
        "model_sha256": fingerprint,
        "seed": options.seed,
        "program_swaps": [list(s) for s in options.program_swaps],
        "track_programs": [list(t) for t in options.track_programs],
        "drums": options.drums,
        "error": r.error,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


class _Manifest:
    """``manifest.jsonl``: one JSON line per file, appended and flushed as results arrive."""

    def __init__(self, path: Path | None, loaded, options: RenderOptions) -> None:
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.loaded, self.options = loaded, options
        self.fingerprint = model_fingerprint(loaded)

    def record(self, r: FileResult, status: str, **extra) -> None:
        if self.file:
            line = _manifest_line(r, status, self.loaded, self.fingerprint, self.options, **extra)
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


class _Workers:
    """The actors: started, replaced when one dies, all killed at the end."""

    def __init__(self, ray, model, device: str, dtype: str, opts: RayOptions) -> None:
        gpu = str(device).startswith("cuda")
        self.ray, self.args = ray, (model, device, dtype, opts.threads)
        self.cls = ray.remote(RenderWorker).options(
            num_cpus=0 if gpu else opts.threads, num_gpus=1 if gpu else 0, max_restarts=0
        )
        self.all: list = []

    def new(self):
        self.all.append(self.cls.remote(*self.args))
        return self.all[-1]

    def start(self, n: int) -> list:
        """``n`` ready actors; RuntimeError (one line) when they cannot load the model."""
        actors = [self.new() for _ in range(n)]
        try:
            self.infos = self.ray.get([a.info.remote() for a in actors])
        except self.ray.exceptions.RayActorError as e:
            lines = [c.strip() for c in str(e).strip().splitlines() if c.strip()]
            reason = lines[-1] if lines else type(e).__name__
            raise RuntimeError(f"Ray workers could not start: {reason}") from None
        return actors

    def replace(self, dead):
        self.ray.kill(dead)
        return self.new()

    def kill_all(self) -> None:
        for a in self.all:
            self.ray.kill(a)


def render_files_ray(
    loaded,
    model: str | None,
    tasks: Sequence[FileTask],
    options: RenderOptions,
    out: OutputOptions | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    ray_options: RayOptions | None = None,
    manifest: Path | None = None,
    skipped: Sequence[FileTask] = (),
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[FileResult]:
    """Render ``tasks`` on Ray workers; the same results (and bytes) as ``batch.render_files``.

    Args:
        loaded: the model loaded by the driver (its name, defaults and fingerprint for the
            manifest); workers load their own copy from ``model`` (a registered name or a folder
            every node can read; None = the default model).
        device, dtype: as for ``load_model`` on each worker; a CUDA device gives each worker a GPU.
        manifest: ``manifest.jsonl`` to append one line per file to (``skipped`` ones included).
    Returns one ``FileResult`` per task, in order. Raises RuntimeError if no worker can start.
    """
    ray = import_ray()
    opts = ray_options or RayOptions()
    if options.batch_size is None:  # the driver forms the groups: a fixed size, not the GPU's
        options = replace(options, batch_size=DEFAULT_BATCH_SIZE)
    out = out or OutputOptions()
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())  # workers may start in another folder
    given = {  # workers get absolute paths; results come back with the caller's tasks
        FileTask(t.src.resolve(), t.dst.resolve(), t.mel_out.resolve() if t.mel_out else None): t
        for t in tasks
    }
    results: dict[FileTask, FileResult] = {t: FileResult(t) for t in given.values()}
    book = _Manifest(manifest, loaded, options)
    for t in skipped:
        book.record(FileResult(t), "skipped")
    t0, done, seconds = time.time(), 0, 0.0
    started = _connect(ray, opts, None if opts.workers is None else opts.workers * opts.threads)
    workers = _Workers(ray, model, device, dtype, opts)
    try:
        gpu = str(device).startswith("cuda")
        n = opts.workers or _default_workers(ray, gpu, opts.threads)
        idle = workers.start(min(n, max(1, len(given))))
        if log:
            log(f"{len(idle)} Ray worker(s): {', '.join(i['worker'] for i in workers.infos)}")
        queue = deque((g, 0) for g in render_groups(list(given), options.batch_size))
        if log and len(queue) < len(idle):
            log(
                f"only {len(queue)} group(s) of --batch-size {options.batch_size} file(s) for "
                f"{len(idle)} workers: a smaller --batch-size keeps them all busy"
            )
        inflight: dict = {}
        while queue or inflight:
            while queue and idle:  # every idle worker gets the next group
                group, attempt = queue.popleft()
                actor = idle.pop()
                inflight[actor.render.remote(group, options, out, attempt)] = (
                    actor,
                    group,
                    attempt,
                )
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, group, attempt = inflight.pop(ref)
            group_results, label, retry = _collect(ray, ref, group, attempt, opts.max_attempts)
            idle.append(workers.replace(actor) if label is None else actor)
            if retry:
                queue.appendleft((group, attempt + 1))
                if log:
                    log(f"a worker died; {len(group)} file(s) re-queued")
                continue
            for r in group_results:
                r = replace(r, task=given[r.task])
                results[r.task] = r
                done, seconds = done + 1, seconds + r.seconds
                book.record(
                    r, "ok" if r.ok else "failed", worker=label or "-", attempts=attempt + 1
                )
                if on_result:
                    on_result(r)
            if on_progress:
                on_progress(Progress(done, len(given), seconds, time.time() - t0))
    finally:
        workers.kill_all()
        book.close()
        if started:
            ray.shutdown()
    return [results[t] for t in given.values()]


def _collect(ray, ref, group: list[FileTask], attempt: int, max_attempts: int):
    """A finished group → (results, worker label or None if the worker died, retry?)."""
    try:
        group_results, label = ray.get(ref)
        return group_results, label, False
    except ray.exceptions.RayTaskError as e:  # an error, not a death: recorded, not retried
        why = str(getattr(e, "cause", e)).splitlines() or ["error"]
        return [FileResult(t, error=why[0]) for t in group], "-", False
    except ray.exceptions.RayActorError:
        if attempt + 1 < max_attempts:
            return [], None, True
        error = f"worker died {max_attempts} times rendering it"
        return [FileResult(t, error=error) for t in group], None, False
