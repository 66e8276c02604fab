"""CrossDiff: find what one language model represents that another lacks, with Dedicated Feature Crosscoders."""

__version__ = "0.1.0"
