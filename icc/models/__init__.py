"""Model loading: name resolution to local directories, text encoders, causal LMs."""
