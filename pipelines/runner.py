"""Choosing and configuring the Beam runner from standard Beam command-line flags."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

#: Names that mean "run here". Beam 2.77's DirectRunner first tries the Prism runner, which
#: downloads a binary at run time and silently falls back when it cannot; we go straight to
#: the Fn API runner, which honours --direct_running_mode and --direct_num_workers.
_LOCAL_NAMES = {None, "", "directrunner", "direct", "fnapirunner"}


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    return PipelineOptions(list(beam_args))


def make_runner(options: PipelineOptions) -> PipelineRunner | str:
    """A runner instance for local names, else the name for Beam to resolve (Dataflow, ...)."""
    name = options.view_as(StandardOptions).runner
    key = name.lower() if isinstance(name, str) else None
    if key in _LOCAL_NAMES:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    if key in ("bundlebaseddirectrunner",):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        return BundleBasedDirectRunner()
    return name  # type: ignore[return-value]


def describe_runner(options: PipelineOptions) -> str:
    name = options.view_as(StandardOptions).runner or "DirectRunner"
    all_opts = options.get_all_options(drop_default=True)
    mode = all_opts.get("direct_running_mode")
    workers = all_opts.get("direct_num_workers")
    extra = ", ".join(f"{k}={v}" for k, v in (("mode", mode), ("workers", workers)) if v)
    return f"{name}{f' ({extra})' if extra else ''}"


def runner_keeps_finish_bundle_output(options: PipelineOptions) -> bool:
    """False for runners known to drop what ``DoFn.finish_bundle`` emits.

    Beam's DaskRunner collects a bundle's results before calling ``finish_bundle`` (Beam
    2.77), so anything emitted there vanishes silently.
    """
    name = options.view_as(StandardOptions).runner
    return not (isinstance(name, str) and "dask" in name.lower())


def runs_on_this_machine(options: PipelineOptions) -> bool:
    """Whether every worker shares this machine's filesystem (Beam's local runners)."""
    name = options.view_as(StandardOptions).runner
    key = name.lower() if isinstance(name, str) else None
    return key in _LOCAL_NAMES or key == "bundlebaseddirectrunner"
