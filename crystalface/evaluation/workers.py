"""The model in the worker processes of the benchmarks and experiments, handed over once by the pool's initialiser."""

from __future__ import annotations

#: ``STATE["model"]``: the model of this process (set by :func:`init_worker`).
STATE: dict = {}


def init_worker(model, threads: int | None) -> None:
    """Pool initialiser (also called in-process with ``threads=None``): keep ``model`` for the work units."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # one process per core; more threads would oversubscribe
    STATE["model"] = model
