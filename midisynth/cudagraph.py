"""The denoiser step replayed as a CUDA graph: launch overhead out of the sampler's step loop.

One decoder step of the base model launches ~2,000 small kernels; on an H200 it took 10.9 ms
eager and 1.66 ms replayed as one graph (issue 20). A step's shapes are fixed within a segment
(x [B, 256, 128], t [B] and the segment's conditioning), so the step is captured once per shape
with static input buffers and replayed: each call copies x and t into the buffers, and each new
segment's conditioning (``CrossKV`` or ``FrameCond``: a dataclass of tensors, lists of tensors and
None) is copied into the buffers of the graph for its shapes once. The numbers are those of the
eager step (the same kernels on the same inputs).

CUDA only: ``StepGraphs`` is used by ``render.sample_segment`` when ``RenderOptions.cuda_graphs``
is set and the model is on a CUDA device; elsewhere the step runs eagerly. ``capture="emulate"``
runs the same static-buffer bookkeeping with an eager "replay", so that it is tested on a CPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

Step = Callable[[Tensor, Tensor, Any], Tensor]  # (x [B, T, 128], t [B], cond) -> eps/v [B, T, 128]
MAX_GRAPHS = 24  # graphs kept per model (shapes: batch size × note-token length × context or not)
WARMUP = 2  # eager runs on a side stream before a capture (cuBLAS handles, lazy inits)


def flatten(cond: Any) -> tuple[list[Tensor | None], Callable[[list[Tensor | None]], Any]]:
    """A conditioning dataclass → (its tensors in field order, None kept, lists expanded) and a
    function that rebuilds the same dataclass from such a list."""
    if not dataclasses.is_dataclass(cond) or isinstance(cond, type):
        raise TypeError(f"conditioning must be a dataclass of tensors, got {type(cond).__name__}")
    leaves: list[Tensor | None] = []
    layout: list[tuple[str, int | None]] = []  # (field, list length or None for a single value)
    for f in dataclasses.fields(cond):
        v = getattr(cond, f.name)
        if isinstance(v, (list, tuple)):
            leaves.extend(v)
            layout.append((f.name, len(v)))
        elif v is None or isinstance(v, Tensor):
            leaves.append(v)
            layout.append((f.name, None))
        else:
            raise TypeError(f"conditioning field {f.name} is a {type(v).__name__}, not a tensor")
    kind = type(cond)

    def rebuild(values: list[Tensor | None]) -> Any:
        it, kw = iter(values), {}
        for name, n in layout:
            kw[name] = [next(it) for _ in range(n)] if n is not None else next(it)
        return kind(**kw)

    return leaves, rebuild


def _signature(tensors: list[Tensor | None]) -> tuple:
    return tuple(
        None if v is None else (tuple(v.shape), v.dtype, v.device, v.stride()) for v in tensors
    )


class _Graph:
    """One captured step: static inputs, the graph (or, emulated, the step itself) and its output."""

    def __init__(self, step: Step, x: Tensor, t: Tensor, cond: Any, capture: str, pool: Any):
        leaves, rebuild = flatten(cond)
        self.x, self.t = x.clone(), t.clone()
        self.leaves = [None if v is None else v.clone() for v in leaves]
        self.bound: int | None = None  # token of the binding whose conditioning the buffers hold
        static_cond = rebuild(self.leaves)
        self.run = lambda: step(self.x, self.t, static_cond)
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture == "emulate":  # keeps the step (and so the model) alive: tests only
            self.out = self.run()
            return
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self.run()
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = self.run()
        del self.run  # the graph holds what it needs; the step (and the model) may go

    def bind(self, token: int, leaves: list[Tensor | None]) -> None:
        if self.bound != token:  # a new segment: its conditioning into the static buffers
            for dst, src in zip(self.leaves, leaves, strict=True):
                if dst is not None:
                    dst.copy_(src)
            self.bound = token

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.x.copy_(x)
        self.t.copy_(t)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.out.copy_(self.run())
        return self.out.clone()  # the static output is overwritten by the next replay


class StepGraphs:
    """A model's denoiser step, captured once per input shape and replayed (see module doc).

    ``capture``: "cuda" (torch.cuda.CUDAGraph) or "emulate" (the same buffers, eager replay: for
    tests on a CPU). At most ``max_graphs`` are kept, least recently used dropped first.
    """

    def __init__(self, capture: str = "cuda", max_graphs: int = MAX_GRAPHS) -> None:
        if capture not in ("cuda", "emulate"):
            raise ValueError(f"capture must be cuda or emulate, not {capture!r}")
        self.capture = capture
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle() if capture == "cuda" else None
        self.captures = 0  # graphs captured so far (for tests and benchmarks)
        self._tokens = itertools.count()

    def bind(self, step: Step, cond: Any) -> Callable[[Tensor, Tensor], Tensor]:
        """``denoise(x, t)`` = ``step(x, t, cond)`` for one segment, replayed from a graph.

        ``cond`` must stay unchanged while the returned function is in use (one segment)."""
        leaves, _ = flatten(cond)
        cond_sig = _signature(leaves)
        token = next(self._tokens)

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            key = (_signature([x, t]), cond_sig)
            g = self.graphs.get(key)
            if g is None:
                while len(self.graphs) >= self.max_graphs:
                    self.graphs.popitem(last=False)
                g = _Graph(step, x, t, cond, self.capture, self.pool)
                g.bound = token
                self.graphs[key] = g
                self.captures += 1
            else:
                self.graphs.move_to_end(key)
                g.bind(token, leaves)
            return g(x, t)

        return denoise


_BY_MODEL: weakref.WeakKeyDictionary[nn.Module, StepGraphs] = weakref.WeakKeyDictionary()


def step_graphs(net: nn.Module, capture: str = "cuda") -> StepGraphs:
    """The ``StepGraphs`` of ``net`` (kept while ``net`` lives, so that later segments, files and
    renders replay the graphs captured for the first)."""
    graphs = _BY_MODEL.get(net)
    if graphs is None or graphs.capture != capture:
        graphs = _BY_MODEL[net] = StepGraphs(capture)
    return graphs


def usable(device: torch.device) -> bool:
    """Whether step graphs can run on ``device`` (a CUDA device)."""
    return device.type == "cuda" and torch.cuda.is_available()
