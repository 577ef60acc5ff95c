"""Ray jobs that compose the `icc` library; each module is one `icc <name>` pipeline."""
