"""icc: cluster text corpora and small data sets with language models, as Ray jobs."""

__version__ = "0.1.0"
