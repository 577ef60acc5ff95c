"""Text encoder: a Hugging Face model, mean or last-token pooling, L2-normalised vectors.

Encoders (sentence-transformers models) use mean pooling; a causal LM (AutoModel gives its
decoder, whose `last_hidden_state` is the final layer's hidden states) can be pooled either way:
"last" takes the last non-padding token, the only one that has attended to the whole text.

`TextEmbedder` is a callable class, so Ray Data can hold one model per actor
(`ds.map_batches(TextEmbedder, compute=ActorPoolStrategy(...))`); it also works on its own.
torch and transformers are imported where a model is loaded or run, so that the driver, which
only checks the settings and names the class, does not load them.
"""

import functools
import threading
from typing import TYPE_CHECKING

import numpy as np

from icc.checks import check_bool, check_positive_int
from icc.errors import ICCError
from icc.models.device import (
    CPU_ONLY,
    PRECISIONS,
    check_precision,
    compute_dtype,
    resolve_device,
    resolve_precision,
    use_threads,
)
from icc.models.hub import check_model, load_kwargs, resolve_model

if TYPE_CHECKING:  # annotations only
    import torch
    import transformers

# A token covers at least one character, so this many characters per token keeps every text
# that the tokenizer could fit and spares it from tokenising a multi-megabyte text in full.
_CHARS_PER_TOKEN_BOUND = 16
# Padded tokens per float32 (or onnx-int8) forward pass on the CPU when batch_size is not set: 16
# texts of 64 tokens, 85 intents of 12; fixed batches of 16 left short texts to per-batch overhead,
# and ONNX Runtime ran 256-token texts 1.9x as fast in these as in batches of 64.
CPU_TOKENS_PER_BATCH = 1024
TOKEN_BUDGET_PRECISIONS = ("float32", "onnx-int8")  # those that batch by CPU_TOKENS_PER_BATCH on the CPU
POOLINGS = ("mean", "last")
RENAMED = ("dtype", "quantize")  # embedder settings that embedder.precision replaced
# One TextEmbedder is built at a time in a process: two threads importing transformers' lazy modules
# at once fail ("cannot import name 'AutoModel'"), as when the keyword labeler's encoder loads in
# the background (`icc.corpus.labeler.KeywordLabeler.preload`) while another one is built.
_BUILDING = threading.Lock()


def _one_at_a_time(init):
    @functools.wraps(init)
    def locked(*args, **kwargs):
        with _BUILDING:
            init(*args, **kwargs)
    return locked


class TextEmbedder:
    """Embed texts into (n, dim) float32 unit vectors.

    model: HF id, local directory or a known offline name (see `icc.models.hub`).
    max_length: tokens per text; longer texts are truncated.
    batch_size: texts per forward pass (None: on CPU in float32 or onnx-int8 as many as fill
        CPU_TOKENS_PER_BATCH padded tokens, at most 256, since small batches of similar length run
        fastest there yet short texts need more of them per pass; 64 on CPU in bf16 or torch int8,
        whose matrix units want larger products; 256 on GPU); a call sorts its texts by token count and
        runs them in batches, so padding stays small.
    device: "cuda", "cpu" or None (cuda when available).
    precision: what the encoder computes in (`icc.models.device.PRECISIONS`; "auto" resolved by
        `resolve_precision`). On a GPU the weights stay float32 and the forward pass runs under
        autocast to bf16 or fp16 ("auto": bf16 where the GPU has it, else fp16), or in "float32";
        int8 is refused there. On a CPU: "float32"; "bfloat16" casts the weights (fast with
        AMX-BF16, slow without; "auto" where the CPU has it); "int8": every Linear layer's weights
        int8 per output channel, activations per batch (torch dynamic quantisation at load, under a
        second, nothing cached; `quantize_int8`); "onnx-int8": the same in an ONNX Runtime graph,
        converted once and cached (`icc.models.onnx_encoder`); float16 is refused there.
    num_threads: torch (and ONNX Runtime) CPU threads; None: all cores when on the CPU.
    pooling: "mean" over the non-padding tokens, or "last": the hidden state of the last
        non-padding token (for causal LMs).
    """

    @_one_at_a_time
    def __init__(
        self,
        model: str,
        max_length: int = 256,
        batch_size: int | None = None,
        device: str | None = None,
        precision: str = "auto",
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        text_column: str = "text",
        pooling: str = "mean",
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        check_embedder(model, max_length, pooling, precision, trust_remote_code, allow_pickle)
        self.device = resolve_device(device)
        gpu = self.device.type == "cuda"
        self.precision = resolve_precision(precision, gpu)
        if gpu and self.precision in CPU_ONLY or not gpu and self.precision == "float16":
            raise ICCError(f"embedder.precision={self.precision} does not run on the {self.device.type} "
                           f"(int8 is for CPUs, float16 for GPUs): choose from auto, float32, bfloat16"
                           f"{', float16' if gpu else ', int8, onnx-int8'}")
        use_threads(num_threads, self.device)
        self.autocast_dtype = compute_dtype(self.precision, self.device) if gpu and self.precision != "float32" else None
        path = resolve_model(model)
        kwargs = load_kwargs(trust_remote_code, allow_pickle, path)
        if self.precision == "onnx-int8":
            from icc.models.onnx_encoder import check_local

            check_local(path)  # before the tokenizer: nothing is downloaded for it
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:  # causal LMs often have none; padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.precision == "onnx-int8":
            from icc.models.onnx_encoder import OnnxEncoder

            self.model = OnnxEncoder(path, num_threads, **kwargs)
        else:
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs).to(self.device).eval()
        if not gpu and self.precision == "bfloat16":
            self.model = self.model.to(torch.bfloat16)
        if self.precision == "int8":
            self.model = quantize_int8(self.model)
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        token_budget = not gpu and self.precision in TOKEN_BUDGET_PRECISIONS
        self.batch_size = batch_size or (64 if not gpu and not token_budget else 256)
        self.tokens_per_batch = CPU_TOKENS_PER_BATCH if batch_size is None and token_budget else None
        self.text_column = text_column
        self.pooling = pooling
        self.dim = self.model.config.hidden_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return (len(texts), dim) float32 unit vectors, in the order of `texts`."""
        return self.embed_with_lengths(texts)[0]

    def embed_with_lengths(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (len(texts), dim) float32 and the tokens used per text (n,), at most max_length."""
        return self.embed_tokens(token_ids(self.tokenizer, texts, self.max_length))

    def embed_tokens(self, input_ids: list) -> tuple[np.ndarray, np.ndarray]:
        """`embed_with_lengths` for texts tokenised already (`token_ids`): rows of token ids.

        The rows run in batches sorted by token count (`forward_batches`), so a batch is padded by a few
        percent of its tokens (sorted by characters, as sentence-transformers does, by 25-40%).
        """
        counts = np.array([len(ids) for ids in input_ids], dtype=np.int64)
        order = np.argsort(counts, kind="stable")
        vectors = np.empty((len(input_ids), self.dim), dtype=np.float32)
        lengths = np.empty(len(input_ids), dtype=np.int64)
        for idx in self.forward_batches(counts[order]):
            idx = order[idx]
            vectors[idx], lengths[idx] = self._forward(self._pad([input_ids[i] for i in idx]))
        return vectors, lengths

    def forward_batches(self, sorted_counts: np.ndarray) -> list[slice]:
        """Slices of the ascending token counts (n,) that make the forward passes: `batch_size` rows
        each, or with `tokens_per_batch`, as many (at most `batch_size`) as keep the padded tokens
        (rows x the longest, the last) within it, at least one."""
        cuts, start = [], 0
        while start < len(sorted_counts):
            stop = min(start + self.batch_size, len(sorted_counts))
            if self.tokens_per_batch:
                # Counts ascend, so rows start..j padded to row j cost (j - start + 1) * counts[j] tokens.
                fits = (np.arange(1, stop - start + 1) * sorted_counts[start:stop]) <= self.tokens_per_batch
                stop = start + max(1, int(np.argmin(fits)) if not fits.all() else len(fits))
            cuts.append(slice(start, stop))
            start = stop
        return cuts

    def _pad(self, rows: list) -> "transformers.BatchEncoding":
        """input_ids and attention_mask (b, longest) of token id rows, padded on the tokenizer's side."""
        import torch
        import transformers

        lengths = np.array([len(ids) for ids in rows])
        width = lengths.max()
        if self.tokenizer.padding_side == "right":
            mask = np.arange(width) < lengths[:, None]
        else:
            mask = np.arange(width) >= (width - lengths)[:, None]
        input_ids = np.full(mask.shape, self.tokenizer.pad_token_id, dtype=np.int64)
        # Vectorised (a Python loop over the rows took as long as a GPU forward pass): a boolean
        # mask fills row by row, left to right, so each row gets its own ids in order.
        input_ids[mask] = np.concatenate(rows)
        return transformers.BatchEncoding({"input_ids": torch.from_numpy(input_ids),
                                           "attention_mask": torch.from_numpy(mask.astype(np.int64))})

    def _forward(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (b, dim) and token counts (b,) of one padded batch of token ids."""
        import torch

        tokens = tokens.to(self.device)
        with torch.inference_mode():
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"]
            lengths = mask.sum(1)
            if self.pooling == "last":
                # The last 1 of each mask row: right or left padding alike.
                last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
                pooled = hidden[torch.arange(len(hidden), device=hidden.device), last]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / lengths.clamp(min=1).unsqueeze(-1)
            vectors = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return vectors.cpu().numpy(), lengths.long().cpu().numpy()

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch: adds `vector` (dim floats) and `truncated` (bool) to a batch of texts.

        Rows whose `reject` is set are not embedded; their vector is all zeros. A batch with an
        `input_ids` column (from `tokenize_batch`) is not tokenised again; the column is dropped.
        """
        texts = batch[self.text_column]
        ok = np.array([not r for r in batch["reject"]], dtype=bool)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        lengths = np.zeros(len(texts), dtype=np.int64)
        if ok.any() and "input_ids" in batch:
            vectors[ok], lengths[ok] = self.embed_tokens(batch["input_ids"][ok])
        elif ok.any():
            vectors[ok], lengths[ok] = self.embed_with_lengths([str(t) for t in texts[ok]])
        batch.pop("input_ids", None)
        batch["vector"] = vectors
        batch["truncated"] = lengths >= self.max_length
        return batch


def quantize_int8(model: "torch.nn.Module") -> "torch.nn.Module":
    """`model` with every Linear layer dynamically quantised: int8 weights with one scale per output
    channel (one per tensor loses twice the cosine to the float vectors), activations quantised
    per batch; the rest (embeddings, LayerNorm, softmax) stays float32."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def check_embedder(model: str, max_length: int = 256, pooling: str = "mean", precision: str = "auto",
                   trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
    """ICCError for a `TextEmbedder` load setting of the wrong type or value (the model is not loaded)."""
    check_model(model)
    check_positive_int(max_length, "max_length")
    if pooling not in POOLINGS:
        raise ICCError(f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
    check_precision(precision)
    check_bool(trust_remote_code, "trust_remote_code")
    check_bool(allow_pickle, "allow_pickle")
    if precision == "onnx-int8":
        from icc.models.onnx_encoder import check_onnx_int8

        check_onnx_int8(model)


def check_renamed(settings: dict) -> None:
    """ICCError for an `embedder` setting under a name it had before (`renamed_key`)."""
    for key in settings:
        message = renamed_key(key)
        if message:
            raise ICCError(message)


def loadable_settings(recorded: dict) -> dict:
    """Embedder settings a run recorded (its run.json's `embedder`) as a `TextEmbedder` on any device
    loads them: from before embedder.precision, quantize int8 is precision "int8", dtype "auto"
    "float32" (what a CPU computed in then; on a GPU float32 differs from its autocast by ~1e-3) and
    another dtype that precision; float16, which runs on GPUs only, is "auto" (a CPU picks its own).
    The vectors so made are the run's to ~1e-3: for queries, names and new texts."""
    settings = {key: value for key, value in recorded.items() if key not in RENAMED}
    if any(key in recorded for key in RENAMED):
        dtype = recorded.get("dtype", "auto")
        settings["precision"] = "int8" if recorded.get("quantize") == "int8" else "float32" if dtype == "auto" else dtype
    if settings.get("precision") == "float16":
        settings["precision"] = "auto"
    return settings


def renamed_key(key: str) -> str | None:
    """What to write instead of the embedder setting `key`, if it is one of RENAMED; else None."""
    if key in RENAMED:
        return f"embedder.{key} is now embedder.precision (choose from {', '.join(PRECISIONS)})"
    return None


def token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the special tokens, truncated to `max_length` (and to the
    tokenizer's own maximum); no padding."""
    if not texts:
        return []
    max_length = min(max_length, tokenizer.model_max_length)
    max_chars = max_length * _CHARS_PER_TOKEN_BOUND
    return tokenizer([t[:max_chars] for t in texts], truncation=True, max_length=max_length)["input_ids"]


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)


def tokenize_batch(batch: dict, model: str, max_length: int = 256, trust_remote_code: bool = False,
                   text_column: str = "text") -> dict:
    """Ray Data batch: adds `input_ids` (int32 token ids, at most max_length; none for rejected
    rows), as `TextEmbedder` would tokenise, so that a stage of CPU tasks does it instead of the
    (GPU) actors. The tokenizer is loaded once per worker process."""
    tokenizer = _tokenizer(model, trust_remote_code)
    texts = batch[text_column]
    ok = np.array([not r for r in batch["reject"]], dtype=bool)
    column = np.empty(len(texts), dtype=object)
    column[:] = [np.zeros(0, np.int32)] * len(texts)
    if ok.any():
        for i, row in zip(np.flatnonzero(ok), token_ids(tokenizer, [str(t) for t in texts[ok]], max_length)):
            column[i] = np.asarray(row, dtype=np.int32)
    batch["input_ids"] = column
    return batch
