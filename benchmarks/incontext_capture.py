"""Cost of the two design choices of `icc incontext`'s LLM stage, on one device (GPU when present):

1. batched generation (episodes_per_batch prompts per left-padded `generate` call) vs one prompt
   at a time;
2. attention read by hooks during the answer's prefill (`capture_item_attention`: (n, n) item
   matrices per requested layer) vs `output_attentions=True` on an eager model (every layer's
   (heads, T, T) weights), for all layers.

Time (s) and peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the process's peak RSS
growth over the run, sampled every 5 ms. Episodes: synthetic, k=3, d=3, n=`--n`, df=2.

    python benchmarks/incontext_capture.py [--episodes 16] [--n 40] [--model SmolLM2-135M-Instruct]
"""

import argparse
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

from icc.incontext.runner import cluster_episodes, render_episode
from icc.incontext.synthetic import make_episode
from icc.models.llm import generate, load_causal_lm

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def measured(device: torch.device):
    """Yields a dict that gets "seconds" and "peak_mib" (memory above the starting level)."""
    record = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        process, peak, done = psutil.Process(), [0], threading.Event()
        base = process.memory_info().rss

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    start = time.perf_counter()
    yield record
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak_bytes = torch.cuda.max_memory_allocated() - base
    else:
        done.set()
        sampler.join()
        peak_bytes = peak[0] - base
    record.update(seconds=round(time.perf_counter() - start, 3), peak_mib=round(peak_bytes / 2**20, 1))


@torch.inference_mode()
def output_attentions_head_means(model, tokenizer, episodes: list[dict]) -> list[list[torch.Tensor]]:
    """The usual way: an eager model returns every layer's (heads, T, T) weights; per episode, the
    (T, T) head mean of each layer."""
    means = []
    for episode in episodes:
        prompt, _ = render_episode(tokenizer, episode)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        attentions = model(**ids, output_attentions=True, use_cache=False).attentions
        means.append([a[0].mean(dim=0) for a in attentions])
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()

    model, tokenizer = load_causal_lm(args.model)
    device = model.device
    layers = list(range(model.config.num_hidden_layers))
    episodes = [make_episode(seed, k=3, d=3, df=2, n_range=(args.n, args.n)) for seed in range(args.episodes)]
    prompts = [render_episode(tokenizer, e)[0] for e in episodes]
    budget = 3 * args.n + 10
    generate(model, tokenizer, prompts[:1], 4)  # warm-up

    rows = {}
    with measured(device) as rows["generate, one prompt at a time"]:
        single = [generate(model, tokenizer, [p], budget)[0] for p in prompts]
    with measured(device) as rows[f"generate, batches of {args.episodes}"]:
        batched = generate(model, tokenizer, prompts, budget)
    with measured(device) as rows[f"generate + hooked item attention, {len(layers)} layers"]:
        cluster_episodes(model, tokenizer, episodes, layers, budget)
    with measured(device) as rows[f"hooked item attention only (prefill), {len(layers)} layers"]:
        cluster_episodes(model, tokenizer, episodes, layers, answer=[False] * len(episodes))
    eager, _ = load_causal_lm(args.model, attn_implementation="eager")
    with measured(device) as rows[f"output_attentions=True, {len(layers)} layers, one prompt at a time"]:
        output_attentions_head_means(eager, tokenizer, episodes)
    del eager
    same = sum(a == b for a, b in zip(single, batched))
    tokens = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])

    name = "incontext_capture_" + ("gpu" if device.type == "cuda" else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = "\n".join(f"| {what} | {r['seconds']:.2f} | {r['peak_mib']:.0f} |" for what, r in rows.items())
    text = f"""# icc incontext: batched generation and hooked attention capture ({device_name})

{args.model}, dtype {model.dtype}; {args.episodes} synthetic episodes, k=3, d=3, n={args.n} ({tokens} prompt
tokens each), greedy, at most {budget} new tokens. Peak memory: {"CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS growth of the process"} above the level before each row.

| what | seconds | peak MiB |
|---|---|---|
{table}

Batched answers identical to one-at-a-time answers: {same} of {args.episodes} (greedy decoding; left
padding can flip near-ties in low precision).

Command: `python benchmarks/incontext_capture.py --episodes {args.episodes} --n {args.n}`
"""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"device": device_name, "rows": rows, "same_answers": same}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
