"""Drop tallies as both data (for the manifest) and Beam counters (for runner UIs)."""

from __future__ import annotations

from apache_beam.metrics import Metrics

from mlm_data.accounting import Counts

NAMESPACE = "mlm_data"


def report(counts: Counts) -> Counts:
    """Mirror ``counts`` into Beam counters and return it unchanged.

    Counters are for watching a job (Dataflow's UI shows them live); the manifest is built from
    the ``Counts`` records themselves, because counters are not available on every runner.
    """
    if counts.read:
        Metrics.counter(NAMESPACE, "documents_read").inc(counts.read)
    if counts.written:
        Metrics.counter(NAMESPACE, "documents_written").inc(counts.written)
    for reason, n in counts.dropped.items():
        if n:
            Metrics.counter(NAMESPACE, f"dropped_{reason}").inc(n)
    return counts
