"""icc finetune: the examples, their loss mask and batches; then LoRA training of a tiny random Llama
on 2 Ray Train workers with DeepSpeed (CPU, gloo) end to end, and a run killed midway and resumed."""

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch
from conftest import BIN, ROOT, run_icc
from omegaconf import OmegaConf
from test_hostile_input import Payload  # unpickled, it creates a file: what a planted checkpoint could run

from icc.config import CONFIG_DIR
from icc.errors import ICCError
from icc.finetune.data import (
    IGNORE,
    TrainingSet,
    answer_text,
    collate,
    encode,
    epoch_steps,
    first_appearance,
    label_spans,
    micro_batches,
    shuffled,
)
from icc.finetune.evaluate import paired_bootstrap
from icc.finetune.train import answer_loss, check_settings, fit, steps_per_epoch
from icc.incontext.prompt import parse_labels
from icc.incontext.runner import render_episode
from icc.incontext.synthetic import make_episode, make_episodes
from icc.metrics import cluster_accuracy
from icc.models.hub import resolve_model

# 2 workers x 2 episodes x 2 micro-batches = 8 episodes a step; 32 training episodes: 4 steps an epoch.
TRAIN = ["ray.progress_bars=false", "data.ks=[2]", "data.ds=[1]", "data.dfs=[1,100]", "data.episodes=16",
         "data.n_range=[6,10]", "data.validation_episodes=2", "trainer.micro_batch_size=2", "trainer.accumulation=2",
         "trainer.lr=5e-3", "trainer.warmup_steps=1", "lora.r=8", "lora.alpha=16"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("SmolLM2-135M-Instruct"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer):
    """A random 2-layer Llama (hidden size 64) with SmolLM2's tokenizer and chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _answer(tokenizer, example: dict, n: int) -> list[int]:
    """The labels of an example's answer (its tokens with loss), as parsed from a generation."""
    answer = tokenizer.decode([t for t in example["labels"] if t != IGNORE], skip_special_tokens=True)
    labels, status = parse_labels(answer, n)
    assert status == "ok"
    return labels


def test_answers_number_clusters_by_first_appearance():
    assert first_appearance([2, 2, 0, 1, 0]) == [0, 0, 1, 2, 1]
    assert answer_text([1, 0, 1]) == "[0, 1, 0]"


def test_loss_mask_covers_the_answer_and_end_of_turn_only(tokenizer):
    episode = make_episode(seed=3, k=3, d=2, df=5.0, n_range=(8, 8))
    example = encode(tokenizer, episode)
    ids, labels = example["input_ids"], example["labels"]
    prompt_ids = tokenizer(render_episode(tokenizer, episode)[0], add_special_tokens=False)["input_ids"]
    assert len(ids) == len(labels) and ids[: len(prompt_ids)] == prompt_ids
    assert labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    answer = labels[len(prompt_ids) :]
    assert answer == ids[len(prompt_ids) :]
    assert answer[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert _answer(tokenizer, example, episode["n"]) == first_appearance(episode["labels"])


def test_label_loss_covers_the_label_digits_only(tokenizer):
    assert label_spans("[0, 12, 3]") == [(1, 2), (4, 6), (8, 9)]
    for k, n in ((3, 9), (12, 14)):  # one-digit and two-digit labels
        episode = make_episode(seed=4, k=k, d=1, df=5.0, n_range=(n, n))
        full, labels_only = encode(tokenizer, episode), encode(tokenizer, episode, "labels")
        assert labels_only["input_ids"] == full["input_ids"]
        kept = [t for t in labels_only["labels"] if t != IGNORE]
        digits = "".join(tokenizer.decode([t]) for t in kept)
        assert digits == "".join(map(str, first_appearance(episode["labels"])))  # every label's digits, in order
        assert len(kept) < sum(t != IGNORE for t in full["labels"]) / 2  # brackets, ", " and EOS have no loss
    with pytest.raises(ICCError, match="data.loss_tokens must be one of answer, labels"):
        encode(tokenizer, episode, "format")


def test_shuffled_points_keep_their_labels_and_the_partition(tokenizer):
    episode = make_episode(seed=5, k=3, d=2, df=2.0, n_range=(12, 12))
    moved = shuffled(episode, np.random.default_rng(0))
    assert moved["points"] != episode["points"]
    pairs = lambda e: sorted(zip(map(tuple, e["points"]), e["labels"]))  # noqa: E731
    assert pairs(moved) == pairs(episode)
    answer = _answer(tokenizer, encode(tokenizer, moved), 12)
    assert answer == first_appearance(moved["labels"]) and cluster_accuracy(moved["labels"], answer) == 1.0


def test_training_set_shows_new_point_orders_each_epoch(tokenizer):
    episodes = make_episodes(2, [3], [2], [5.0], seed=0, n_range=(10, 12))
    plain, augmented = TrainingSet(tokenizer, episodes, False, seed=0), TrainingSet(tokenizer, episodes, True, seed=0)
    assert plain.example(1, epoch=3) == plain.encoded[1]
    assert augmented.example(1, epoch=0) == augmented.example(1, epoch=0) != augmented.example(1, epoch=1)
    assert augmented.batch([0, 1], epoch=2)["input_ids"].shape[0] == 2


def test_collate_pads_on_the_right_without_loss():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_batches_group_lengths_and_steps_split_an_epoch():
    lengths = np.random.default_rng(0).integers(50, 500, size=403)
    batches = micro_batches(lengths, 4, np.random.default_rng(1))
    assert sorted(i for b in batches for i in b) == list(range(403)) and len(batches) == 101
    assert all(list(lengths[b]) == sorted(lengths[b], reverse=True) for b in batches)
    assert micro_batches(lengths, 4)[0] == list(np.argsort(-lengths, kind="stable")[:4])
    steps = epoch_steps(lengths, 4, workers=2, accumulation=3, seed=0, epoch=0)
    assert len(steps) == steps_per_epoch(403, 4, 2, 3) == 16
    assert all(len(step) == 2 and all(len(worker) == 3 for worker in step) for step in steps)
    used = [i for step in steps for worker in step for batch in worker for i in batch]
    assert len(used) == len(set(used)) > 16 * 2 * 3 * 4 - 4  # 96 distinct micro-batches, one may be the short one
    assert steps == epoch_steps(lengths, 4, 2, 3, seed=0, epoch=0) != epoch_steps(lengths, 4, 2, 3, seed=0, epoch=1)


def test_answer_loss_is_the_models_loss_on_the_answer(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    examples = [encode(tokenizer, e) for e in make_episodes(1, [2, 3], [1, 2], [5.0], seed=0, n_range=(5, 9))]
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        total, count = answer_loss(model, batch)
        reference = model(**batch).loss  # the mean over all labelled tokens
    assert count == sum(label != IGNORE for e in examples for label in e["labels"])
    assert torch.allclose(total / count, reference, rtol=1e-5)


def test_bad_training_settings_are_user_errors(tmp_path):
    conf = OmegaConf.load(Path(CONFIG_DIR) / "finetune.yaml")
    data, trainer = OmegaConf.to_container(conf.data), OmegaConf.to_container(conf.trainer)
    for key, value, message in [
        ("workers", 0, "trainer.workers must be a positive integer"),
        ("zero_stage", 3, "trainer.zero_stage must be 0, 1 or 2"),
        ("micro_batch_size", 1000, "6400 training episodes do not fill one optimizer step"),
    ]:
        with pytest.raises(ICCError, match=message):
            fit(tmp_path, {}, data, {}, {**trainer, key: value}, seed=0)


def test_an_adapter_or_a_shared_seed_is_a_user_error():
    data, evaluation = {"validation_seed": 1, "loss_tokens": "labels"}, {"seed": 2}
    check_settings({"adapter": None}, 0, data, evaluation)
    with pytest.raises(ICCError, match="data.loss_tokens must be one of"):
        check_settings({"adapter": None}, 0, {**data, "loss_tokens": "digits"}, evaluation)
    with pytest.raises(ICCError, match="llm.adapter must be null"):
        check_settings({"adapter": "runs/a/adapter"}, 0, data, evaluation)
    with pytest.raises(ICCError, match="evaluation.seed must differ"):
        check_settings({"adapter": None}, 2, data, evaluation)


def test_paired_bootstrap():
    result = paired_bootstrap([0.5, 0.5, 0.6, 0.7], [1.0, 0.5, 0.9, 0.6])
    assert result["mean"] == pytest.approx(0.175) and (result["better"], result["worse"], result["tied"]) == (2, 1, 1)
    assert result["ci95"][0] <= result["mean"] <= result["ci95"][1]


@pytest.fixture(scope="module")
def trained(ray_address, tiny_model, tmp_path_factory):
    """`icc finetune` on the tiny model: 8 steps (2 epochs), checkpoints at 4 and 8, evaluation, merge."""
    out = tmp_path_factory.mktemp("finetune")
    result = run_icc("finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", *TRAIN, "trainer.max_steps=8",
                     "trainer.eval_every=4", "trainer.checkpoint_every=4", "evaluation.episodes=1", "evaluation.ks=[2]",
                     "evaluation.ds=[1]", "evaluation.dfs=[1,1.5,100]", "llm.generate.max_new_tokens=8", "merge=true",
                     f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_training_lowers_the_loss_and_logs_it(trained):
    out, result = trained
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["step"] == 8 and train["resumed_from_step"] == 0 and train["tokens_per_s"] > 0
    assert [step for step, _ in train["history"]["train_loss"]] == list(range(1, 9))
    eval_loss = dict(train["history"]["eval_loss"])
    assert list(eval_loss) == [0, 4, 8] and eval_loss[8] < eval_loss[4] < eval_loss[0]
    assert [step for step, _ in train["history"]["eval_label_loss"]] == [0, 4, 8]
    # the curve: 3 held-out episodes (1 per df) answered at each eval, against 8 episodes a step
    curve = train["history"]["held_out_acc"]
    assert [(step, seen) for step, seen, _ in curve] == [(0, 0), (4, 32), (8, 64)]
    assert all(0 < acc <= 1 for _, _, acc in curve) and "held-out acc by episodes seen: 0: " in result.stdout
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (out / "train").glob("step_*")) == ["step_000004", "step_000008"]
    assert "icc finetune:" in result.stdout and json.loads((out / "run.json").read_text())["pipeline"] == "finetune"


def test_adapter_reloads_and_changes_the_output(trained, tiny_model, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from icc.models.llm import load_causal_lm

    out, _ = trained
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    ids = torch.tensor([encode(tokenizer, make_episode(7, 2, 1, 5.0, (8, 8)))["input_ids"]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter")(ids).logits
        loaded, _ = load_causal_lm(str(tiny_model), adapter=str(out / "adapter"))  # as icc incontext llm.adapter=
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
        assert torch.allclose(loaded(ids).logits, tuned)
    assert (tuned - base).abs().max() > 1e-2
    assert torch.allclose(merged, tuned, atol=1e-4)


def test_evaluation_before_and_after_on_the_same_episodes(trained):
    out, _ = trained
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    for part, episodes in (("all", 3), ("seen_df", 2), ("unseen_df", 1)):
        for method in ("zero_shot", "finetuned"):
            assert evaluation[part][method]["episodes"] == episodes and 0 <= evaluation[part][method]["acc"] <= 1
        assert evaluation[part]["acc_gain"]["episodes"] == episodes
    assert set(evaluation["all"]["finetuned"]["by_df"]) == {"1", "1.5", "100"}
    rows = pq.read_table(out / "evaluation.parquet").to_pylist()
    assert [r["df"] for r in rows] == [1.0, 1.5, 100.0] and [r["seen"] for r in rows] == [True, False, True]
    assert all(len(r["pred_zero_shot"]) == len(r["pred_finetuned"]) == r["n"] for r in rows)


def test_killed_run_resumes_to_the_configured_step(ray_address, tiny_model, tmp_path):
    args = ["finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", *TRAIN, "trainer.max_steps=16",
            "trainer.checkpoint_every=2", "trainer.eval_every=0", "evaluation.episodes=0", f"output.dir={tmp_path}"]
    log = tempfile.TemporaryFile("w+")
    run = subprocess.Popen([BIN / "icc", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    snapshot = tmp_path / "train" / "checkpoint_manager_snapshot.json"  # written once a checkpoint is registered
    deadline = time.monotonic() + 300
    while not snapshot.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.poll() is None, log.seek(0) or log.read()[-3000:]
    driver = psutil.Process(run.pid).children()  # `icc` runs the pipeline's process
    for process in [*driver, psutil.Process(run.pid)]:
        process.kill()
    run.wait()
    psutil.wait_procs(driver, timeout=30)
    assert snapshot.exists() and not (tmp_path / "metrics.json").exists()

    refused = run_icc(*args)
    assert refused.returncode == 2 and "trainer.resume=true" in refused.stderr
    resumed = run_icc(*args, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert train["step"] == 16 and 2 <= train["resumed_from_step"] < 16
    assert [step for step, _ in train["history"]["train_loss"]] == list(range(1, 17))  # each step once


def test_resume_without_a_run_is_an_error(ray_address, tiny_model, tmp_path):
    result = run_icc("finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", "trainer.resume=true",
                     "evaluation.episodes=0", f"output.dir={tmp_path}")
    assert result.returncode == 2 and "holds no checkpoint to resume from" in result.stderr


RESUME_TO_4 = [*TRAIN, "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=0",
               "evaluation.episodes=0", "trainer.resume=true"]


@pytest.fixture(scope="module")
def two_steps(ray_address, tiny_model, tmp_path_factory):
    """The output.dir of `icc finetune` on the tiny model, 2 steps, a checkpoint at step 2, no evaluation."""
    out = tmp_path_factory.mktemp("two-steps")
    result = run_icc("finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", *TRAIN, "trainer.max_steps=2",
                     "trainer.checkpoint_every=2", "trainer.eval_every=0", "evaluation.episodes=0", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("damage, message", [
    ("replace", "differs from what this run wrote (deepspeed/mp_rank_00_model_states.pt)"),
    ("plant_file", "differs from what this run wrote (deepspeed/extra.pt)"),
    ("plant_checkpoint", "step_000001 is not a checkpoint this run wrote"),
    ("no_manifest", "does not vouch for them"),
])
def test_resume_loads_only_checkpoints_this_run_wrote(ray_address, tiny_model, two_steps, tmp_path, damage, message):
    out, marker = tmp_path / "run", tmp_path / "unpickled"
    shutil.copytree(two_steps, out)
    checkpoint = out / "train" / "step_000002"
    assert json.loads((out / "checkpoints.json").read_text()).keys() == {"step_000002"}
    if damage == "replace":  # same name, other bytes
        torch.save(Payload(marker), checkpoint / "deepspeed" / "mp_rank_00_model_states.pt")
    elif damage == "plant_file":
        torch.save(Payload(marker), checkpoint / "deepspeed" / "extra.pt")
    elif damage == "plant_checkpoint":
        shutil.copytree(checkpoint, out / "train" / "step_000001")
    else:
        (out / "checkpoints.json").unlink()
    result = run_icc("finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", *RESUME_TO_4,
                     f"output.dir={out}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("icc: error: ")
    assert message in result.stderr
    assert not marker.exists()  # nothing was unpickled


def test_resume_of_an_untouched_run_goes_on(ray_address, tiny_model, two_steps, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    result = run_icc("finetune", f"ray.address={ray_address}", f"llm.model={tiny_model}", *RESUME_TO_4,
                     f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["train"]["resumed_from_step"] == 2
    assert json.loads((out / "checkpoints.json").read_text()).keys() == {"step_000002", "step_000004"}
