"""Imported by each Beam SDK worker process as it starts (``--beam_plugins``, added by
``pipelines.runner.pipeline_options``): from then on the worker ends when the driver does.

Beam's ``multi_processing`` runner starts its workers itself, through ``/bin/sh -c``, so no
code of ours runs in a worker before its first bundle, and a worker that never gets one would
otherwise never be bound. Importing this module is the whole plugin; it does nothing outside
a worker of a local driver (``mlm_data.lifetime``).
"""

from mlm_data import lifetime

lifetime.bind_to_driver()
