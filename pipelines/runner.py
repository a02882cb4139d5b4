"""Choosing and configuring the Beam runner from standard Beam command-line flags."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

#: Names that mean "run here". Beam 2.77's DirectRunner first tries the Prism runner, which
#: downloads a binary at run time and silently falls back when it cannot; we go straight to
#: the Fn API runner, which honours --direct_running_mode and --direct_num_workers.
_LOCAL_NAMES = {None, "", "directrunner", "direct", "fnapirunner"}

#: Imported by every SDK worker process of a local runner as it starts, so that it dies with
#: the driver (``pipelines.worker_lifetime``).
WORKER_PLUGIN = "pipelines.worker_lifetime"

#: Modules that register more ``PipelineOptions`` classes when imported (their runners' flags),
#: imported only when a flag is not found among the ones ``pipeline_options`` itself defines.
_MORE_OPTIONS = ("apache_beam.runners.dask.dask_runner", "apache_beam.runners.render", "apache_beam.yaml.options")


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam's options from the command line, with our defaults where the user set none.

    Beam's DaskRunner puts at least 128 elements in one partition of a ``Create``; our first
    ``Create`` holds the input files, so a corpus of fewer than 128 files would run as one
    partition on one Dask worker, however many there are. One file per partition spreads
    the reading, cleaning and tokenizing over the workers.
    """
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if (isinstance(runner, str) and "dask" in runner.lower()
            and not any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args)):
        args.append("--dask_partition_size=1")
    return PipelineOptions(args)


def unknown_to_beam(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The arguments no registered Beam option accepts, and Beam's flags (for a "did you mean").

    Beam itself only logs "Discarding unparseable args" and runs on, so a mistyped flag would
    silently become a run with defaults; the CLI refuses those instead. Abbreviations are not
    accepted (``--direct_num`` is not ``--direct_num_workers``), as in Beam. A known flag
    without its value or with a value Beam refuses raises ``argparse.ArgumentError`` (Beam
    would print its 150-line usage when the pipeline is built).
    """
    unknown, flags = _parse_with_beam(args)
    if unknown:
        for module in (*_MORE_OPTIONS, _runner_module(args)):
            try:
                if module:
                    importlib.import_module(module)
            except ImportError:  # a runner whose extra is not installed defines no flags here
                continue
        unknown, flags = _parse_with_beam(args)
    return unknown, flags


def _parse_with_beam(args: Sequence[str]) -> tuple[list[str], list[str]]:
    parsers: list[argparse.ArgumentParser] = []

    def register_all(parser: argparse.ArgumentParser) -> None:
        # Beam registers the direct subclasses of PipelineOptions; add their subclasses too.
        for cls in _option_classes(PipelineOptions):
            if PipelineOptions not in cls.__bases__:
                try:
                    cls._add_argparse_args(parser)  # the documented hook of every options class
                except argparse.ArgumentError:  # a subclass repeating its base's flags
                    pass
        parser.exit_on_error = False
        parsers.append(parser)

    PipelineOptions([]).get_all_options(add_extra_args_fn=register_all)
    parser = parsers[0]
    _, unknown = parser.parse_known_args(list(args))
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    return unknown, flags


def _option_classes(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _option_classes(sub)


def _runner_module(args: Sequence[str]) -> str | None:
    """``--runner a.b.MyRunner`` (either spelling): the module that defines the runner."""
    for i, arg in enumerate(args):
        name = arg.partition("=")[2] if arg.startswith("--runner=") else (
            args[i + 1] if arg == "--runner" and i + 1 < len(args) else "")
        if "." in name:
            return name.rpartition(".")[0]
    return None


def make_runner(options: PipelineOptions) -> PipelineRunner | str:
    """A runner instance for local names, else the name for Beam to resolve (Dataflow, ...)."""
    name = options.view_as(StandardOptions).runner
    key = name.lower() if isinstance(name, str) else None
    if key in _LOCAL_NAMES:
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner.fn_runner import (
            ExtendedProvisionInfo,
            FnApiRunner,
        )
        from google.protobuf import struct_pb2

        # What the SDK worker processes of --direct_running_mode=multi_processing receive as
        # their pipeline options: just the plugin that binds them to the driver.
        worker_options = struct_pb2.Struct()
        worker_options.update({"beam_plugins": [WORKER_PLUGIN]})
        return FnApiRunner(provision_info=ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
            retrieval_token="unused-retrieval-token", pipeline_options=worker_options)))
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
