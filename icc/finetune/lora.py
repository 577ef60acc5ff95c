"""LoRA adapters (PEFT) on a causal LM: adding one for training, merging one into its base model."""

from pathlib import Path

from icc.checks import check_non_negative, check_positive, check_positive_int
from icc.errors import ICCError
from icc.models.llm import load_causal_lm

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def check_lora(r: int = 64, alpha: float = 16, dropout: float = 0.05, target_modules=TARGET_MODULES) -> None:
    """ICCError for an `add_lora` setting (the config's `lora` group) of the wrong type or range."""
    check_positive_int(r, "lora.r")
    check_positive(alpha, "lora.alpha")
    if check_non_negative(dropout, "lora.dropout") >= 1:
        raise ICCError(f"lora.dropout must be below 1, got {dropout!r}")
    if (isinstance(target_modules, str) or not target_modules
            or not all(isinstance(name, str) and name for name in target_modules)):
        raise ICCError(f"lora.target_modules must be a non-empty list of module names, got {target_modules!r}")


def add_lora(model, r: int = 64, alpha: float = 16, dropout: float = 0.05, target_modules=TARGET_MODULES):
    """`model` wrapped in a PEFT model whose only trainable weights are rank-`r` LoRA matrices on the
    `target_modules` (module name suffixes; default: the attention projections of Llama-like models).
    The update B @ A is scaled by alpha / r; B starts at zero, so the wrapped model computes what
    `model` does until it is trained."""
    from peft import LoraConfig, get_peft_model

    check_lora(r, alpha, dropout, target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # e.g. a target module the model does not have
        raise ICCError(f"lora: {e}") from None


def merge_adapter(out: Path, model: str, adapter: str, **load_options) -> Path:
    """Write `model` (loaded with `load_causal_lm` and its keyword arguments `load_options`) with the
    LoRA `adapter` merged into its weights, and its tokenizer, to `out`: a directory that loads like
    any Hugging Face model."""
    merged, tokenizer = load_causal_lm(model, adapter=adapter, **load_options)
    merged = merged.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)
