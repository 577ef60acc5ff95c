"""Text encoder: a Hugging Face model, mean pooling over tokens, L2-normalised vectors.

`TextEmbedder` is a callable class, so Ray Data can hold one model per actor
(`ds.map_batches(TextEmbedder, compute=ActorPoolStrategy(...))`); it also works on its own.
"""

import os

import numpy as np
import torch

from icc.models.hub import load_kwargs, resolve_model
from icc.runtime import actor_pool

# A token covers at least one character, so this many characters per token keeps every text
# that the tokenizer could fit and spares it from tokenising a multi-megabyte text in full.
_CHARS_PER_TOKEN_BOUND = 16


class TextEmbedder:
    """Embed texts into (n, dim) float32 unit vectors.

    model: HF id, local directory or a known offline name (see `icc.models.hub`).
    max_length: tokens per text; longer texts are truncated.
    batch_size: texts per forward pass (None: 16 on CPU, where small batches of similar length
        run fastest, 256 on GPU); a call sorts its texts by length and runs them in batches of
        this size, so padding stays small.
    device: "cuda", "cpu" or None (cuda when available). On GPU the forward pass runs under
        fp16/bf16 autocast (`dtype`).
    num_threads: torch threads; None: all cores of the machine.
    """

    def __init__(
        self,
        model: str,
        max_length: int = 256,
        batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        text_column: str = "text",
    ):
        from transformers import AutoModel, AutoTokenizer

        # Ray pins OMP_NUM_THREADS to the actor's CPUs (1); on a CPU node the model should use them all.
        torch.set_num_threads(num_threads or os.cpu_count())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.autocast_dtype = _autocast_dtype(dtype, self.device)
        path = resolve_model(model)
        kwargs = load_kwargs(trust_remote_code, allow_pickle)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModel.from_pretrained(path, **kwargs).to(self.device).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 16)
        self.text_column = text_column
        self.dim = self.model.config.hidden_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return (len(texts), dim) float32 unit vectors, in the order of `texts`."""
        return self.embed_with_lengths(texts)[0]

    def embed_with_lengths(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (len(texts), dim) float32 and the tokens used per text (n,), at most max_length."""
        max_chars = self.max_length * _CHARS_PER_TOKEN_BOUND
        texts = [t[:max_chars] for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            vectors[idx], lengths[idx] = self._embed_batch([texts[i] for i in idx])
        return vectors, lengths

    @torch.inference_mode()
    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        lengths = mask.sum(1)
        pooled = (hidden * mask).sum(1) / lengths.clamp(min=1)
        vectors = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return vectors.cpu().numpy(), lengths[:, 0].long().cpu().numpy()

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch: adds `vector` (dim floats) and `truncated` (bool) to a batch of texts.

        Rows whose `reject` is set are not embedded; their vector is all zeros.
        """
        texts = batch[self.text_column]
        ok = np.array([not r for r in batch["reject"]], dtype=bool)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        lengths = np.zeros(len(texts), dtype=np.int64)
        if ok.any():
            vectors[ok], lengths[ok] = self.embed_with_lengths([str(t) for t in texts[ok]])
        batch["vector"] = vectors
        batch["truncated"] = lengths >= self.max_length
        return batch


def _autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or dtype == "float32":
        return None
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


def embed_dataset(
    ds,
    model: str,
    rows_per_batch: int = 1024,
    actors: int | None = None,
    num_gpus: float | None = None,
    cpus_per_actor: float = 1,
    **embedder_kwargs,
):
    """Add `vector` and `truncated` columns to a Ray Dataset of texts with a pool of embedder actors
    (one model each; see `icc.runtime.actor_pool` for `actors`, `num_gpus`, `cpus_per_actor`).
    `rows_per_batch` rows go to an actor at a time, which sorts them by length and runs them in
    `batch_size` forward passes.
    """
    return ds.map_batches(
        TextEmbedder,
        fn_constructor_kwargs={"model": model, **embedder_kwargs},
        batch_size=rows_per_batch,
        **actor_pool(actors, num_gpus, cpus_per_actor),
    )
