"""Where a training step's time goes: ``torch.profiler`` over a few steps, summarised.

Two questions decide what to optimise. Is the device busy, or waiting for the host to queue
work (kernel launches, Python, casts, the data loader)? And which kernels take the device's
time? ``profile_steps`` answers both for any step function:

* on a GPU: the wall time per step, the time the device was busy (the union of its kernel and
  copy intervals, so overlapping streams count once), the host's time inside torch operators
  (mostly launching kernels), and the kernels that took the most device time;
* on the CPU: the wall time per step, the time inside torch operators (the arithmetic) against
  the rest (Python, dispatch, the data loader), and the operators that took the most time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


@dataclass(frozen=True)
class StepProfile:
    device: str
    """``cuda`` or ``cpu``."""
    steps: int
    wall_ms: float
    """Per step, by the host's clock, the device synchronised before and after."""
    busy_ms: float
    """Per step: GPU busy time (union of kernel and copy intervals), or CPU time inside torch operators."""
    host_ops_ms: float
    """Per step, the host's time inside torch operators (on the CPU the same as ``busy_ms``)."""
    top: tuple[tuple[str, float, float], ...]
    """The costliest kernels (GPU) or operators (CPU): ``(name, calls per step, ms per step)``."""


def profile_steps(run_step: Callable[[], object], *, steps: int, device: torch.device, top: int = 15) -> StepProfile:
    """Profile ``steps`` calls of ``run_step`` (warm it up first: compilation is not a step)."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    _sync(device)
    with profile(activities=activities) as prof:
        start = perf_counter()
        for _ in range(steps):
            run_step()
        _sync(device)
        wall = perf_counter() - start
    events = [e for e in prof.events() if not e.is_user_annotation and not e.is_python_function]
    cpu_ops = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    host_us = sum(e.self_cpu_time_total for e in cpu_ops)
    if cuda:
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        busy_us = _union_us([(e.time_range.start, e.time_range.end) for e in kernels])
        costs = _by_name((e.name, e.time_range.end - e.time_range.start) for e in kernels)
    else:
        busy_us = host_us
        costs = _by_name((e.name, e.self_cpu_time_total) for e in cpu_ops)
    ranked = sorted(costs.items(), key=lambda kv: -kv[1][1])[:top]
    return StepProfile(device=device.type, steps=steps, wall_ms=1000 * wall / steps, busy_ms=busy_us / 1000 / steps,
                       host_ops_ms=host_us / 1000 / steps,
                       top=tuple((name, calls / steps, us / 1000 / steps) for name, (calls, us) in ranked))


def format_profile(p: StepProfile) -> str:
    """The summary lines and the table of the costliest kernels or operators."""
    share = p.busy_ms / p.wall_ms if p.wall_ms else 0.0
    if p.device == "cuda":
        lines = [f"per step: {p.wall_ms:.2f} ms wall; GPU busy {p.busy_ms:.2f} ms ({share:.0%}), idle "
                 f"{max(p.wall_ms - p.busy_ms, 0.0):.2f} ms; host inside torch operators {p.host_ops_ms:.2f} ms "
                 "(launches, dispatch)", "top kernels by GPU time:"]
    else:
        lines = [f"per step: {p.wall_ms:.2f} ms wall; inside torch operators {p.busy_ms:.2f} ms ({share:.0%}), "
                 f"outside them {max(p.wall_ms - p.busy_ms, 0.0):.2f} ms (Python, dispatch, data)",
                 "top operators by CPU time:"]
    lines.append(f"  {'ms/step':>8} {'share':>6} {'calls':>6}  name")
    for name, calls, ms in p.top:
        lines.append(f"  {ms:>8.3f} {ms / p.busy_ms if p.busy_ms else 0.0:>6.1%} {calls:>6.1f}  {name[:90]}")
    return "\n".join(lines)


def _by_name(items) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for name, us in items:
        calls, total = out.get(name, (0, 0.0))
        out[name] = (calls + 1, total + us)
    return out


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals, overlaps counted once.

    >>> _union_us([(0, 2), (1, 3), (5, 6)])
    4.0
    """
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
