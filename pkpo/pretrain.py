"""The tiny-model testbed's supervised start (``pkpo-pretrain``): a ~1M-parameter Llama
trained from scratch on arithmetic, so that RL has a policy with low pass@1 and real pass@16.

Everything it builds is a standard Hugging Face checkpoint: ``LlamaForCausalLM`` from a
``LlamaConfig`` (``architecture``) and a character-level ``PreTrainedTokenizerFast`` made
with the ``tokenizers`` library (one token per character of ``tokenizer.chars``, plus
``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; BOS before every text), both written with
``save_pretrained``. Importing this module registers it with ``pkpo.models``
(``register_builder``), which then builds it on first use (``source: pretrain``) and caches
it under a hash of these settings (``config_key``).

Training: next-token cross-entropy on the answer tokens (the completion and its EOS) of
prompts rendered exactly as the RL loop renders them (``ArithmeticTask.prompt`` through
``encode_prompts``, no chat template). Each batch draws ``batch_size`` problems, a mixture
component (operand digits) with probability proportional to its ``weight`` and then a
problem of the ``supervised`` pool, which never holds an RL problem (``in_pool``). With
``data.answer_noise`` = q (optional, 0 when absent) each answer digit is replaced by a uniform
random digit with probability q: the model then learns the right algorithm but spreads its
probability over wrong digits, so its low pass@1 comes from spread rather than from not knowing
-- the start on which RL's first move, sharpening, is large and safe. AdamW with
linear warm-up and cosine decay to ``final_lr_ratio * lr``. Deterministic on one machine:
the seed fixes the initial weights and the data order, and the build runs with a fixed
number of torch threads. At the end it reports pass@k on held-out problems of the RL pool
(``eval``), sampled at temperature 1 with the HF sampler.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, processors
from tokenizers.models import BPE
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pkpo import metrics, models
from pkpo.cache import WEIGHTS_FILE, build_once, cache_root, file_sha256
from pkpo.ppo import pad_batch
from pkpo.prompts import encode_prompts
from pkpo.rollouts import sample_and_score
from pkpo.samplers.base import SamplingParams
from pkpo.samplers.hf import HFSampler
from pkpo.scoring import Scorer
from pkpo.tasks.arithmetic import ArithmeticTask
from pkpo.tasks.base import Problem

log = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when a change to this module changes what a config builds
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
REPORT_FILE = "pretrain_report.json"
SECTIONS = ("seed", "torch_threads", "tokenizer", "architecture", "data", "optim", "eval")
IGNORE = -100  # label of tokens without loss (prompt, padding)


def check_config(cfg: Mapping[str, Any] | None) -> None:
    """Raise ``ValueError`` naming what is missing or wrong in a ``pretrain`` config."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"source=pretrain needs a `pretrain` mapping, got {cfg!r}")
    missing = [key for key in SECTIONS if key not in cfg]
    unknown = sorted(set(cfg) - set(SECTIONS))
    if missing or unknown:
        raise ValueError(f"pretrain: missing keys {missing}, unknown keys {unknown}")
    chars = cfg["tokenizer"]["chars"]
    if len(set(chars)) != len(chars):
        raise ValueError(f"pretrain.tokenizer.chars repeats a character: {chars!r}")
    noise = float(cfg["data"].get("answer_noise", 0.0))
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"pretrain.data.answer_noise must be in [0, 1), got {noise}")
    if not cfg["data"]["mix"] or any(c["weight"] <= 0 for c in cfg["data"]["mix"]):
        raise ValueError("pretrain.data.mix needs components with positive weights")
    for key in ("steps", "batch_size"):
        if int(cfg["optim"][key]) < 1:
            raise ValueError(f"pretrain.optim.{key} must be >= 1, got {cfg['optim'][key]}")


def config_key(cfg: Mapping[str, Any]) -> str:
    """12 hex digits of the sha256 of the settings (and the builder version)."""
    text = json.dumps(source_record(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_record(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a cached build records as its origin: a different record means a rebuild. The
    held-out ``eval`` settings only shape the build's report, not its weights, so they are
    left out (changing them does not retrain)."""
    weights = {key: value for key, value in cfg.items() if key != "eval"}
    return {"builder": BUILDER_VERSION, "pretrain": json.loads(json.dumps(weights))}


# ----------------------------------------------------------------------------- parts


def build_tokenizer(chars: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: a BPE model without merges over ``chars``."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *chars])}
    core = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()  # characters back into one string, no separators
    bos = SPECIAL_TOKENS[1]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    pad, _, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk
    )


def build_model(architecture: Mapping[str, Any], tokenizer: PreTrainedTokenizerFast):
    """A freshly initialised ``LlamaForCausalLM`` (seed torch first) sized for ``tokenizer``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **architecture,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def mixture(data: Mapping[str, Any]) -> tuple[list[ArithmeticTask], list[float]]:
    """The supervised data's components (tasks of the ``supervised`` pool) and weights."""
    tasks = [
        ArithmeticTask(
            digits=int(component["digits"]),
            ops=data["ops"],
            n_train=0,
            n_test=0,
            template=data["template"],
            answer_format=data["answer_format"],
            pool="supervised",
        )
        for component in data["mix"]
    ]
    return tasks, [float(component["weight"]) for component in data["mix"]]


def corrupt(answer: str, noise: float, rng: random.Random) -> str:
    """``answer`` with each digit replaced, with probability ``noise``, by a uniform random
    digit (which may be the same one). ``noise=0`` draws nothing from ``rng``."""
    if noise == 0.0:
        return answer
    return "".join(
        rng.choice("0123456789") if c.isdigit() and rng.random() < noise else c for c in answer
    )


def encode_examples(
    tokenizer: PreTrainedTokenizerFast,
    task: ArithmeticTask,
    problems: list[Problem],
    targets: list[str] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids + EOS)`` of each problem, prompts as the RL loop sends them;
    the answers are ``targets`` when given, else the task's right answers."""
    prompts = encode_prompts(tokenizer, [task.prompt(p) for p in problems], False)
    targets = [task.target(p) for p in problems] if targets is None else targets
    answers = tokenizer(targets, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    return [(p, [*a, eos]) for p, a in zip(prompts, answers["input_ids"], strict=True)]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` ``[B, L]`` (the RL
    update's padding, ``ppo.pad_batch``); labels are the input ids on answer tokens and
    ``IGNORE`` elsewhere."""
    prompts, answers = (list(part) for part in zip(*examples, strict=True))
    batch = pad_batch(prompts, answers, torch.zeros(len(examples)), pad_id)
    labels = batch.input_ids.masked_fill(batch.completion_mask == 0, IGNORE)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}


def batches(
    tokenizer: PreTrainedTokenizerFast, data: Mapping[str, Any], size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches; their order depends only on ``seed`` and ``data``."""
    tasks, weights = mixture(data)
    noise = float(data.get("answer_noise", 0.0))
    rng = random.Random(seed)
    while True:
        picks = rng.choices(range(len(tasks)), weights=weights, k=size)
        examples = []
        for j in sorted(set(picks)):  # one tokenizer call per component
            problems = [tasks[j].draw(rng) for _ in range(picks.count(j))]
            targets = [corrupt(tasks[j].target(p), noise, rng) for p in problems]
            examples += encode_examples(tokenizer, tasks[j], problems, targets)
        yield collate(examples, tokenizer.pad_token_id)


def answer_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens given everything before them."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
    )


def lr_factor(step: int, steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``final_ratio`` at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (names and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- train, evaluate


def train(cfg: Mapping[str, Any]) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    """Train the model ``cfg`` describes; returns it, its tokenizer and training statistics."""
    check_config(cfg)
    optim = cfg["optim"]
    tokenizer = build_tokenizer(cfg["tokenizer"]["chars"])
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(cfg["architecture"], tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(optim["lr"]),
        betas=tuple(optim["betas"]),
        weight_decay=float(optim["weight_decay"]),
    )
    steps = int(optim["steps"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, steps, int(optim["warmup_steps"]), float(optim["final_lr_ratio"])),
    )
    data = batches(tokenizer, cfg["data"], int(optim["batch_size"]), int(cfg["seed"]))
    losses = []
    started = time.perf_counter()
    for step in range(steps):
        loss = answer_loss(model, next(data))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(optim["max_grad_norm"]))
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(steps // 10, 1) == 0:
            log.info("pretrain step %d/%d: loss %.4f", step + 1, steps, np.mean(losses[-50:]))
    stats = {
        "train_seconds": time.perf_counter() - started,
        "final_loss": float(np.mean(losses[-50:])),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, tokenizer, stats


def evaluate(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: ArithmeticTask,
    problems: list[Problem],
    n: int,
    ks: list[int],
    seed: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """pass@k (and its s.e. over problems) of ``n`` temperature-1 samples per problem,
    sampled and scored as the RL loop's held-out evaluation does (``pkpo.rollouts``)."""
    sampler = HFSampler(model, tokenizer, batch_size=len(problems) * n)
    prompts = encode_prompts(tokenizer, [task.prompt(p) for p in problems], False)
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
    # in-process scoring: the arithmetic verifier is cheap and trusted, a pool would only
    # add start-up time to every build
    scored = sample_and_score(sampler, Scorer(task, workers=0), problems, prompts, n, params)
    return metrics.pass_at_k_metrics(scored.rewards, ks, with_se=True)


def evaluate_config(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, cfg: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """pass@k on each held-out set of ``cfg.eval.sets``: the test split of an RL-pool task
    (``digits``, ``n_train``, ``seed``) in the data's format."""
    spec, data = cfg["eval"], cfg["data"]
    results = {}
    for name, held_out in spec["sets"].items():
        task = ArithmeticTask(
            digits=int(held_out["digits"]),
            ops=data["ops"],
            n_train=int(held_out["n_train"]),
            n_test=int(spec["problems"]),
            seed=int(held_out["seed"]),
            template=data["template"],
            answer_format=data["answer_format"],
            pool="rl",
        )
        results[name] = evaluate(
            model,
            tokenizer,
            task,
            task.load("test"),
            int(spec["n"]),
            list(spec["ks"]),
            int(cfg["seed"]),
            int(spec["max_new_tokens"]),
        )
    return results


def build(cfg: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train, evaluate and write the checkpoint (and ``pretrain_report.json``) to ``out_dir``."""
    started = time.perf_counter()
    with torch_threads(int(cfg["torch_threads"])):
        model, tokenizer, stats = train(cfg)
        model.eval()
        held_out = evaluate_config(model, tokenizer, cfg)
    report = {
        **stats,
        "weights_sha256": weights_hash(model),
        "held_out": held_out,
        "build_seconds": time.perf_counter() - started,
        "torch_threads": int(cfg["torch_threads"]),
    }
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
    log.info("built the supervised start: %s", summary(report))
    return report


def cached_build(name: str, cfg: Mapping[str, Any]) -> Path:
    """The cached checkpoint of the model ``cfg`` describes, training it first if needed:
    ``<cache>/models/<name>-<config_key>/``, so every setting has its own build (built once,
    under a lock: ``pkpo.cache.build_once``)."""
    target = cache_root() / "models" / f"{name}-{config_key(cfg)}"
    return build_once(target, source_record(cfg), "training", lambda out: build(cfg, out))


# ``source: pretrain`` models load through this module (pkpo.models does not import it)
models.register_builder("pretrain", models.Builder(check_config, cached_build))


def summary(report: Mapping[str, Any]) -> str:
    """One line per held-out set: pass@k +- s.e., and the parameter count and build time."""
    lines = [
        f"{report['parameters']:,} parameters, trained in {report['train_seconds']:.1f} s "
        f"(build {report['build_seconds']:.1f} s, {report['torch_threads']} torch thread(s)), "
        f"final loss {report['final_loss']:.4f}"
    ]
    for name, result in report["held_out"].items():
        cells = [
            f"{key} {value:.3f} +- {result[key + '_se']:.3f}"
            for key, value in result.items()
            if not key.endswith("_se")
        ]
        lines.append(f"held-out {name}: " + ", ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``pkpo-pretrain [model=tiny_arith] [model.pretrain.optim.steps=...]``: build (or find
    in the cache) the supervised start of a model config with a ``pretrain`` section and
    print its report; for a pinned model (``sha256``) also whether the rebuild matches it."""
    import sys

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pkpo.config import CONF_DIR

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    overrides = sys.argv[1:] if argv is None else argv
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        model = compose("pretrain", overrides=overrides).model
    if model.get("pretrain") is None:
        raise SystemExit(f"model={model.name} has no `pretrain` section to build from")
    cfg = OmegaConf.to_container(model.pretrain, resolve=True)
    try:
        check_config(cfg)
    except ValueError as err:
        raise SystemExit(f"model={model.name}: {err}") from None
    checkpoint = cached_build(model.name, cfg)
    report = json.loads((checkpoint / REPORT_FILE).read_text())
    print(f"[pkpo-pretrain] {checkpoint}\n{summary(report)}", flush=True)
    pinned = model.get("sha256")
    if pinned is not None:
        built = file_sha256(checkpoint / WEIGHTS_FILE)
        same = "matches" if built == pinned else "differs from"
        print(
            f"[pkpo-pretrain] {WEIGHTS_FILE} sha256 {built} {same} the pinned {pinned} "
            "(a rebuild is bit-identical only on the same kind of CPU and thread count)",
            flush=True,
        )


if __name__ == "__main__":
    main()
