"""Reading corpora and data sets."""
