"""icc: cluster text corpora and small data sets with language models, as Ray jobs.

`icc.TextClusterer` (icc.text_clusterer) is imported on first use, so `import icc` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["TextClusterer"]


def __getattr__(name: str):
    if name == "TextClusterer":
        from icc.text_clusterer import TextClusterer

        return TextClusterer
    raise AttributeError(f"module 'icc' has no attribute {name!r}")
