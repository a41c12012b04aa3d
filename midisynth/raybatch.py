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
``ray`` is an optional extra (``pip install 'midisynth[ray]'``), imported only here.
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
from .render import RenderOptions

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
        raise ImportError(
            "--ray needs Ray: pip install 'midisynth[ray]' (or pip install ray)"
        ) from None
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
    out = out or OutputOptions()
    gpu = str(device).startswith("cuda")
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())  # workers may start in another folder
    given = {  # workers get absolute paths; results come back with the caller's tasks
        FileTask(t.src.resolve(), t.dst.resolve(), t.mel_out.resolve() if t.mel_out else None): t
        for t in tasks
    }
    tasks = list(given)
    fingerprint = model_fingerprint(loaded)
    results: dict[FileTask, FileResult] = {t: FileResult(t) for t in given.values()}
    mf = open(manifest, "a", encoding="utf-8") if manifest else None  # noqa: SIM115
    t0 = time.time()
    done, seconds = 0, 0.0

    def record(r: FileResult, status: str, **extra) -> None:
        if mf:
            line = _manifest_line(r, status, loaded, fingerprint, options, **extra)
            mf.write(json.dumps(line) + "\n")
            mf.flush()

    for t in skipped:
        record(FileResult(t), "skipped")
    started = _connect(ray, opts, None if opts.workers is None else opts.workers * opts.threads)
    worker_cls = ray.remote(RenderWorker).options(
        num_cpus=0 if gpu else opts.threads, num_gpus=1 if gpu else 0, max_restarts=0
    )
    actors: list = []

    def new_actor():
        actors.append(worker_cls.remote(model, device, dtype, opts.threads))
        return actors[-1]

    try:
        n_workers = opts.workers or _default_workers(ray, gpu, opts.threads)
        idle = [new_actor() for _ in range(min(n_workers, max(1, len(tasks))))]
        try:
            infos = ray.get([a.info.remote() for a in idle])
        except ray.exceptions.RayActorError as e:
            cause = str(e).strip().splitlines()
            reason = next((c for c in reversed(cause) if c.strip()), type(e).__name__)
            raise RuntimeError(f"Ray workers could not start: {reason.strip()}") from None
        if log:
            log(f"{len(idle)} Ray worker(s): {', '.join(i['worker'] for i in infos)}")
        queue = deque((g, 0) for g in render_groups(tasks, options.batch_size))
        inflight: dict = {}
        while queue or inflight:
            while queue and idle:
                group, attempt = queue.popleft()
                actor = idle.pop()
                ref = actor.render.remote(group, options, out, attempt)
                inflight[ref] = (actor, group, attempt)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, group, attempt = inflight.pop(ref)
                try:
                    group_results, label = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # an error, not a death: not retried
                    idle.append(actor)
                    label, why = "-", str(e.cause if hasattr(e, "cause") else e).splitlines()
                    group_results = [FileResult(t, error=(why or ["error"])[0]) for t in group]
                except ray.exceptions.RayActorError:
                    ray.kill(actor)
                    idle.append(new_actor())  # a fresh worker takes the dead one's place
                    if attempt + 1 < opts.max_attempts:
                        queue.appendleft((group, attempt + 1))
                        if log:
                            log(f"a worker died; {len(group)} file(s) re-queued")
                        continue
                    label = "-"
                    group_results = [
                        FileResult(t, error=f"worker died {opts.max_attempts} times rendering it")
                        for t in group
                    ]
                else:
                    idle.append(actor)
                for r in group_results:
                    r = replace(r, task=given[r.task])
                    results[r.task] = r
                    done += 1
                    seconds += r.seconds
                    record(r, "ok" if r.ok else "failed", worker=label, attempts=attempt + 1)
                    if on_result:
                        on_result(r)
                if on_progress:
                    on_progress(Progress(done, len(tasks), seconds, time.time() - t0))
    finally:
        for a in actors:
            ray.kill(a)
        if mf:
            mf.close()
        if started:
            ray.shutdown()
    return [results[t] for t in given.values()]
