"""mlm-data core: everything the Beam pipelines and the trainer share, with no Beam or torch."""

__version__ = "0.1.0"
