"""LoRA fine-tuning on Ray Train workers with DeepSpeed: `fit` starts (or resumes) a run,
`train_loop` is what each worker runs, `export_adapter` takes the trained adapter out of the last
checkpoint.

Each worker draws the same synthetic episodes from the seeds and runs its share of every optimizer
step (`icc.finetune.data.epoch_steps`); DeepSpeed averages the LoRA gradients over the workers
(ZeRO stage 0-2; gloo on CPU, NCCL on GPU). A checkpoint holds DeepSpeed's state without the frozen
base weights (LoRA weights, optimizer, schedule, step, loss history) and the PEFT adapter; every
worker reports its part through `ray.train.report`, which Ray merges into one folder
`output.dir/train/step_<step>`. A run started again with the same output.dir finds them
(`ray.train.get_checkpoint`) and goes on from the last one, on the same episode order, once every
checkpoint there matches the sha256 the run recorded when it saved it (`icc.finetune.checkpoints`).
"""

import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icc.checks import check_bool, check_int, check_non_negative, check_positive, check_positive_int
from icc.errors import ICCError
from icc.files import write_json
from icc.finetune.checkpoints import MANIFEST, SNAPSHOT, file_hashes, merge_parts, record_checkpoint, verify_checkpoints
from icc.finetune.data import IGNORE, TrainingSet, check_loss_tokens, collate, encode, epoch_steps, micro_batches
from icc.finetune.lora import add_lora, check_lora
from icc.incontext.runner import cluster_episodes
from icc.incontext.scoring import episode_scores
from icc.incontext.synthetic import check_grid, make_episodes
from icc.memory import peak_rss_mib
from icc.models.llm import load_causal_lm

RUN = "train"  # output.dir/train: Ray Train's run folder (checkpoints and its snapshot of them)
ADAPTER = "adapter"  # the PEFT adapter inside a checkpoint
_DEEPSPEED = "deepspeed"  # DeepSpeed's checkpoint tag (its folder inside a checkpoint)


def check_settings(llm: dict, seed: int, data: dict, evaluation: dict) -> None:
    """ICCError for an `llm` with an adapter (icc finetune trains a new one) and for seeds that do not
    differ (`seed`, `data["validation_seed"]` and `evaluation["seed"]` each draw their own episodes),
    and for a `data["loss_tokens"]` that is not one of LOSS_TOKENS."""
    if llm["adapter"] is not None:
        raise ICCError("llm.adapter must be null: icc finetune trains a new adapter")
    check_loss_tokens(data["loss_tokens"])
    if len({seed, data["validation_seed"], evaluation["seed"]}) < 3:
        raise ICCError("seed, data.validation_seed and evaluation.seed must differ: each draws its own episodes")


def check_fit(data: dict, lora: dict, trainer: dict, seed: int) -> int:
    """ICCError for a `fit` setting of the wrong type or range (the config's `data`, `lora` and
    `trainer` groups and `seed`), before any work; returns the optimizer steps of one epoch."""
    check_int(seed, "seed")
    check_positive_int(data["episodes"], "data.episodes")
    check_grid(data["ks"], data["ds"], data["dfs"], data["n_range"])
    check_bool(data["augment"], "data.augment")
    check_int(data["validation_episodes"], "data.validation_episodes")
    check_int(data["validation_seed"], "data.validation_seed")
    check_lora(**lora)
    for key in ("workers", "micro_batch_size", "accumulation", "epochs", "log_every"):
        check_positive_int(trainer[key], f"trainer.{key}")
    for key in ("warmup_steps", "eval_every", "checkpoint_every"):
        check_int(trainer[key], f"trainer.{key}")
    check_positive_int(trainer["max_steps"], "trainer.max_steps", allow_none=True)
    check_positive_int(trainer["threads"], "trainer.threads", allow_none=True)
    check_positive_int(trainer["keep_checkpoints"], "trainer.keep_checkpoints", allow_none=True)
    check_int(trainer["max_failures"], "trainer.max_failures", minimum=-1)
    for key in ("lr", "grad_clip", "cpus_per_worker"):
        check_positive(trainer[key], f"trainer.{key}")
    check_non_negative(trainer["weight_decay"], "trainer.weight_decay")
    check_bool(trainer["use_gpu"], "trainer.use_gpu", allow_none=True)
    for key in ("gradient_checkpointing", "resume"):
        check_bool(trainer[key], f"trainer.{key}")
    if trainer["zero_stage"] not in (0, 1, 2):
        raise ICCError(f"trainer.zero_stage must be 0, 1 or 2, got {trainer['zero_stage']!r}")
    examples = data["episodes"] * len(data["ks"]) * len(data["ds"]) * len(data["dfs"])
    per_epoch = steps_per_epoch(examples, trainer["micro_batch_size"], trainer["workers"], trainer["accumulation"])
    if per_epoch == 0:
        raise ICCError(f"{examples} training episodes do not fill one optimizer step of "
                       f"workers x micro_batch_size x accumulation episodes")
    return per_epoch


def steps_per_epoch(examples: int, micro_batch_size: int, workers: int, accumulation: int) -> int:
    """Optimizer steps in one pass over `examples` (what `epoch_steps` gives: whole steps only)."""
    return math.ceil(examples / micro_batch_size) // (workers * accumulation)


def fit(out: Path, load: dict, data: dict, lora: dict, trainer: dict, seed: int, curve: list[dict] = ()):
    """Train a LoRA adapter on `trainer["workers"]` Ray Train workers; returns Ray Train's Result.

    load: what loads the base model, the llm config's top keys: `model` and the keyword arguments
    of `load_causal_lm` (adapter null). data, lora, trainer: the config groups of those names.
    curve: held-out episodes answered (constrained, greedy) at step 0 and at every eval loss, their
    mean accuracy logged against the episodes seen (history `held_out_acc`); () for none.

    Checkpoints and Ray Train's state go to out/train, TensorBoard events to out/tensorboard.
    trainer["resume"]: go on from the last checkpoint in out/train (an error when there is none);
    without it, out/train must not hold a run yet.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_epoch = check_fit(data, lora, trainer, seed)
    started = (out / RUN / SNAPSHOT).exists()
    if trainer["resume"] and not started:
        raise ICCError(f"trainer.resume=true but {out / RUN} holds no checkpoint to resume from")
    if started and not trainer["resume"]:
        raise ICCError(f"{out / RUN} already holds a training run: trainer.resume=true goes on with it, "
                       "or choose another output.dir")
    if started:
        verify_checkpoints(out / RUN, out / MANIFEST)  # before any worker unpickles one
    else:
        write_json(out / MANIFEST, {})  # a new run vouches for its own checkpoints only
    config = {
        "load": load, "data": data, "lora": lora, "trainer": trainer, "seed": seed,
        "steps": trainer["max_steps"] or trainer["epochs"] * per_epoch, "steps_per_epoch": per_epoch,
        "log_dir": str(out / "tensorboard"), "manifest": str(out / MANIFEST), "curve": list(curve),
    }
    run = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=trainer["workers"], use_gpu=_use_gpu(trainer["use_gpu"]),
            resources_per_worker={"CPU": trainer["cpus_per_worker"]},
        ),
        run_config=RunConfig(
            name=RUN, storage_path=str(out),
            checkpoint_config=CheckpointConfig(num_to_keep=trainer["keep_checkpoints"]),
            failure_config=FailureConfig(max_failures=trainer["max_failures"]),
        ),
    )
    return run.fit()


def _use_gpu(use_gpu: bool | None) -> bool:
    import ray

    return bool(ray.cluster_resources().get("GPU", 0)) if use_gpu is None else use_gpu


def export_adapter(result, target: Path) -> Path:
    """Copy the PEFT adapter of the run's last checkpoint to `target`."""
    if result.checkpoint is None:
        raise ICCError("the training run ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(Path(folder) / ADAPTER, target, dirs_exist_ok=True)
    return target


def answer_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy (nats) of a batch's answer tokens, and how many there are.

    batch: `collate` output on the model's device. Logits are computed only from the first position
    that predicts an answer token on (`logits_to_keep`): the prompt's would be thrown away, and over
    a 50k-token vocabulary they cost as much as a few layers.
    """
    labels = batch["labels"]
    first = int((labels != IGNORE).any(dim=0).nonzero()[0])
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=labels.shape[1] - first + 1
    ).logits  # (B, T - first + 1, V): positions first - 1 .. T - 1 predict tokens first .. T
    targets = labels[:, first:]
    loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


def deepspeed_config(micro_batch_size: int, accumulation: int, zero_stage: int, grad_clip: float, dtype) -> dict:
    """DeepSpeed's config: bf16 or fp16 mixed precision when the model is loaded in that dtype."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # torch's AdamW: DeepSpeed's fused Adam needs compiled ops
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "steps_per_print": 2**62,  # no step logs of its own
    }


def train_loop(config: dict) -> None:
    """One Ray Train worker: LoRA on the model, DeepSpeed, `config["steps"]` optimizer steps from the
    last checkpoint (if any); eval losses (all answer tokens, label tokens only), held-out accuracy,
    Ray reports and checkpoints as `config["trainer"]` says."""
    import deepspeed
    import ray.train
    import ray.train.torch
    from transformers import get_cosine_schedule_with_warmup

    t, data, seed = config["trainer"], config["data"], config["seed"]
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(t["threads"] or t["cpus_per_worker"])

    load = dict(config["load"])
    model, tokenizer = load_causal_lm(load.pop("model"), device=str(device), **load)
    model.config.use_cache = False
    if t["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, **config["lora"])
    model.train()
    dtype = next(model.parameters()).dtype

    cells = data["ks"], data["ds"], data["dfs"]
    training = TrainingSet(tokenizer, make_episodes(data["episodes"], *cells, seed, tuple(data["n_range"])),
                           data["augment"], seed, data["loss_tokens"])
    held = make_episodes(data["validation_episodes"], *cells, data["validation_seed"], tuple(data["n_range"]))
    validation = {tokens: [encode(tokenizer, e, tokens) for e in held] for tokens in ("answer", "labels")}
    episodes_per_step = workers * t["micro_batch_size"] * t["accumulation"]

    steps = config["steps"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t["lr"],
                                  weight_decay=t["weight_decay"])
    schedule = get_cosine_schedule_with_warmup(optimizer, t["warmup_steps"], steps)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule,
        config=deepspeed_config(t["micro_batch_size"], t["accumulation"], t["zero_stage"], t["grad_clip"], dtype),
    )
    start, history = 0, {"train_loss": [], "eval_loss": [], "eval_label_loss": [], "held_out_acc": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, state = engine.load_checkpoint(folder, tag=_DEEPSPEED, load_module_strict=False)
        start, history = state["step"], state["history"]
    writer = _tensorboard(config["log_dir"], start) if rank == 0 else None

    def evaluate(step: int) -> None:
        """Eval losses into `history` and `metrics`; with `curve`, the held-out accuracy too."""
        for name, examples in (("eval_loss", validation["answer"]), ("eval_label_loss", validation["labels"])):
            metrics[name] = _eval_loss(engine, examples, rank, workers, t["micro_batch_size"], tokenizer.pad_token_id,
                                       device)
            history[name].append([step, metrics[name]])
            if writer:
                writer.add_scalar(f"eval/{name.removeprefix('eval_')}", metrics[name], step)
        if config["curve"]:
            metrics["held_out_acc"] = _held_out_accuracy(engine, tokenizer, config["curve"], rank, workers, device)
            history["held_out_acc"].append([step, step * episodes_per_step, metrics["held_out_acc"]])
            if writer:
                writer.add_scalar("eval/held_out_acc", metrics["held_out_acc"], step)

    metrics = {"resumed_from_step": start}
    if start == 0 and held:
        evaluate(0)
    tokens = seconds = 0.0
    plan, plan_epoch = None, None
    for step in range(start + 1, steps + 1):
        epoch, index = divmod(step - 1, config["steps_per_epoch"])
        if plan_epoch != epoch:
            plan = epoch_steps(training.lengths, t["micro_batch_size"], workers, t["accumulation"], seed, epoch)
            plan_epoch = epoch
        torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))  # LoRA dropout: resumable
        began, lr = time.perf_counter(), schedule.get_last_lr()[0]  # the rate of this step's update
        loss_sum = answer_tokens = step_tokens = 0.0
        for batch_indices in plan[index][rank]:
            batch = {k: v.to(device) for k, v in training.batch(batch_indices, epoch).items()}
            loss, count = answer_loss(engine, batch)
            engine.backward(loss / count)
            engine.step()
            loss_sum, answer_tokens = loss_sum + loss.item(), answer_tokens + count
            step_tokens += int(batch["attention_mask"].sum())
        loss_sum, answer_tokens, step_tokens = _all_sum([loss_sum, answer_tokens, step_tokens], device)
        seconds += time.perf_counter() - began
        tokens += step_tokens
        metrics.update(step=step, train_loss=loss_sum / answer_tokens, lr=lr, tokens_per_s=tokens / seconds)
        if step % t["log_every"] == 0 or step == steps:
            history["train_loss"].append([step, metrics["train_loss"]])
            if writer:
                for name in ("train_loss", "lr", "tokens_per_s"):
                    writer.add_scalar(f"train/{name.removeprefix('train_')}", metrics[name], step)
        evaluated = bool(held) and (step == steps or (t["eval_every"] and step % t["eval_every"] == 0))
        if evaluated:
            evaluate(step)
        if step == steps or (t["checkpoint_every"] and step % t["checkpoint_every"] == 0):
            if step == steps:
                metrics.update(history=history, peak_memory_gib=_peak_memory_gib(device))
            _report_checkpoint(engine, model, step, history, metrics, config["manifest"], workers, rank == 0)
        elif evaluated:
            ray.train.report(metrics)
    if writer:
        writer.close()


def _tensorboard(log_dir: str, start: int):
    """A TensorBoard event writer; events at steps >= start, left by a run that crashed, are hidden."""
    from tensorboardX import SummaryWriter

    return SummaryWriter(log_dir, purge_step=start or None)


def _all_sum(values: list[float], device) -> list[float]:
    """Each value summed over the workers (float64)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def _eval_loss(engine, examples: list[dict], rank: int, workers: int, batch_size: int, pad_id: int, device) -> float:
    """Mean cross-entropy per answer token (nats) over all workers' share of `examples`."""
    mine = examples[rank::workers]
    engine.eval()
    loss_sum = count = 0.0
    for indices in micro_batches([len(e["input_ids"]) for e in mine], batch_size):
        batch = {k: v.to(device) for k, v in collate([mine[i] for i in indices], pad_id).items()}
        loss, tokens = answer_loss(engine, batch)
        loss_sum, count = loss_sum + loss.item(), count + tokens
    engine.train()
    loss_sum, count = _all_sum([loss_sum, count], device)
    return loss_sum / count


@torch.no_grad()
def _held_out_accuracy(engine, tokenizer, episodes: list[dict], rank: int, workers: int, device) -> float:
    """Mean accuracy (Hungarian) of the model's constrained greedy answers to `episodes`, each worker
    answering its share in one batch."""
    mine = episodes[rank::workers]
    model = engine.module
    engine.eval()
    model.config.use_cache = True  # generation reuses the keys and values; training does not keep them
    answers = cluster_episodes(model, tokenizer, mine) if mine else []
    model.config.use_cache = False
    engine.train()
    total, count = _all_sum([sum(episode_scores(e["labels"], a["labels"])["acc"] for e, a in zip(mine, answers)),
                             len(mine)], device)
    return total / count


def _report_checkpoint(engine, model, step: int, history: dict, metrics: dict, manifest: str, workers: int,
                       first: bool) -> None:
    """Save this worker's part of the checkpoint at `step` and report it with `metrics`; the first
    worker records the sha256 of every worker's files in the `manifest` before any reports."""
    import ray.train

    name = f"step_{step:06d}"
    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=_DEEPSPEED, client_state={"step": step, "history": history},
                               exclude_frozen_parameters=True)
        if first:
            model.save_pretrained(Path(folder) / ADAPTER)
        parts = [None] * workers
        torch.distributed.all_gather_object(parts, file_hashes(folder))
        if first:
            record_checkpoint(manifest, name, merge_parts(parts))
        torch.distributed.barrier()  # the entry is written before Ray Train can register the checkpoint
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)


def _peak_memory_gib(device) -> float:
    """Peak GPU memory allocated by torch, or on CPU the peak resident memory of this process (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_mib() / 1024
