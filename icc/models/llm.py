"""Causal language models: loading (with an optional LoRA adapter), chat prompts, greedy generation.

Prompts are complete model inputs: `render_chat` writes the special tokens of the chat template
(or the BOS token), so text is tokenised with ``add_special_tokens=False`` everywhere, which keeps
the token positions of the generation and attention paths the same. torch and transformers are
imported where a model is loaded or run, so that a driver that only checks the settings does not load them.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from icc.checks import check_bool
from icc.errors import ICCError
from icc.models.device import check_dtype, compute_dtype, resolve_device, use_threads
from icc.models.hub import check_model, load_kwargs, resolve_model

if TYPE_CHECKING:  # annotations only
    import torch


def load_causal_lm(name: str, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False,
                   allow_pickle: bool = False, adapter: str | None = None, attn_implementation: str | None = None,
                   num_threads: int | None = None):
    """Return `(model, tokenizer)`, the model in eval mode on `device`.

    name: HF id, local directory or a known offline name (see `icc.models.hub`).
    dtype: "auto" (bfloat16 on CUDA, float16 where the GPU lacks bfloat16, float32 on CPU),
        "bfloat16", "float16" or "float32" (`icc.models.device.compute_dtype`).
    device: "cuda", "cpu" or None (cuda when available).
    num_threads: torch CPU threads; None: all cores when on the CPU (`icc.models.device.use_threads`).
    adapter: a local directory with a PEFT (LoRA) adapter trained on this model; its weights must be
        safetensors unless `allow_pickle`.
    attn_implementation: "eager", "sdpa", ... or None for the transformers default.
    The tokenizer pads on the left (for batched generation) and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    use_threads(num_threads, device)
    path = resolve_model(name)
    kwargs = load_kwargs(trust_remote_code, allow_pickle, path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=compute_dtype(dtype, device),
        attn_implementation=attn_implementation,
        **kwargs,
    ).to(device)
    if adapter is not None:
        model = _with_adapter(model, adapter, allow_pickle)
    return model.eval(), tokenizer


def check_causal_lm(model: str, dtype: str = "auto", trust_remote_code: bool = False, allow_pickle: bool = False,
                    adapter: str | None = None, attn_implementation: str | None = None) -> None:
    """ICCError for a `load_causal_lm` setting (the llm config's top keys) of the wrong type or
    value, or a model or adapter path that does not exist; nothing is loaded."""
    check_model(model)
    check_dtype(dtype)
    check_bool(trust_remote_code, "llm.trust_remote_code")
    check_bool(allow_pickle, "llm.allow_pickle")
    if adapter is not None and not Path(adapter).expanduser().is_dir():
        raise ICCError(f"adapter {adapter} is not a directory")
    if attn_implementation is not None and not isinstance(attn_implementation, str):
        raise ICCError(f"llm.attn_implementation must be a name such as sdpa or null, got {attn_implementation!r}")


def _with_adapter(model, adapter: str, allow_pickle: bool):
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ICCError(f"adapter {adapter} is not a directory")
    if not allow_pickle and not (path / "adapter_model.safetensors").exists():
        raise ICCError(f"adapter {adapter} has no adapter_model.safetensors (pickled weights: allow_pickle)")
    return PeftModel.from_pretrained(model, path)


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt string for chat `messages` ({"role", "content"} dicts), ready for the answer.

    With a chat template: the template with the assistant turn opened. Without one (base models):
    the BOS token, if any, then the message contents joined by newlines.
    """
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (tokenizer.bos_token or "") + "\n".join(m["content"] for m in messages)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, logits_processor=None,
             stop_strings=()) -> list[str]:
    """Greedy continuations of `prompts` (rendered, e.g. by `render_chat`), one batch, left-padded.

    Returns only the new text of each prompt, special tokens removed; each continuation stops at
    an end-of-sequence token or after `max_new_tokens` tokens. logits_processor: a transformers
    `LogitsProcessor` that reshapes the (B, vocab) scores of each step (e.g. one that constrains
    the answers: `icc.incontext.constrained`), or None. stop_strings: a continuation also stops
    after one of these (e.g. "\\n"), which it keeps.
    """
    import torch
    from transformers import LogitsProcessorList

    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        output = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([] if logits_processor is None else [logits_processor]),
            **({"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}),
        )
    return tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def prefill(model, input_ids, attention_mask) -> "torch.Tensor":
    """One forward pass over a left-padded batch (lists or (B, T) tensors), with the positions
    `generate` gives it (counted from each sequence's first real token). Returns the (B, vocab)
    float32 logits of the token after each sequence; forward hooks can read the rest."""
    import torch

    with torch.inference_mode():
        input_ids = torch.as_tensor(input_ids, device=model.device)
        attention_mask = torch.as_tensor(attention_mask, device=model.device)
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                       logits_to_keep=1)
        return output.logits[:, -1].float().cpu()


def next_token_logits(model, tokenizer, prompts: list[str]) -> "torch.Tensor":
    """(len(prompts), vocab) float32 logits of the token after each rendered prompt, one left-padded batch."""
    batch = tokenizer(prompts, padding=True, add_special_tokens=False)
    return prefill(model, batch["input_ids"], batch["attention_mask"])


class PromptActor:
    """One causal LM that answers a chat prompt per row of a pyarrow batch: a Ray Data actor class.

    A subclass says which rows it asks and what (`prompts(batch) -> {row index: user message}`)
    and where the answers go (`answered(batch, answers) -> batch`; answers: one str per row, None
    for rows not asked). Each answer is greedy, at most `max_new_tokens` tokens, and starts after
    `answer_start`, which is written after the opened assistant turn, and stops early after one
    of `stop_strings`. Other keyword arguments go to `load_causal_lm` (dtype, device, adapter,
    num_threads, ...).
    """

    answer_start = ""
    stop_strings = ()

    def __init__(self, model: str, max_new_tokens: int, **load_options):
        self.model, self.tokenizer = load_causal_lm(model, **load_options)
        self.max_new_tokens = max_new_tokens

    def prompts(self, batch) -> dict[int, str]:
        raise NotImplementedError

    def answered(self, batch, answers: list[str | None]):
        raise NotImplementedError

    def __call__(self, batch):
        asked = self.prompts(batch)
        prompts = [render_chat(self.tokenizer, [{"role": "user", "content": message}]) + self.answer_start
                   for message in asked.values()]
        replies = (generate(self.model, self.tokenizer, prompts, self.max_new_tokens, stop_strings=self.stop_strings)
                   if prompts else [])
        answers = [None] * batch.num_rows
        for row, reply in zip(asked, replies):
            answers[row] = reply
        return self.answered(batch, answers)
