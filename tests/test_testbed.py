"""The tiny-model testbed: a deterministic supervised start of a small Llama, its character
tokenizer, its loading through pkpo's ordinary paths and samplers, and the reversed-digit
arithmetic format with its verifier.

Builds use a TINY variant of conf/model/tiny_arith.yaml (a few steps of a 1-layer model) in
a model cache under tmp_path. Expected values are computed by hand or from definitions
(token ids from the character list, the parameter count of a Llama, sha256 pool membership),
and log-probs from a plain forward pass.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import math
import random
import statistics
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from pkpo import models, pretrain
from pkpo.cache import cache_root
from pkpo.config import group_config
from pkpo.models import ModelLoadError, load_policy
from pkpo.pretrain import source_record
from pkpo.prompts import encode_prompts
from pkpo.samplers.base import SamplingParams
from pkpo.samplers.hf import HFSampler
from pkpo.tasks.arithmetic import (
    RL_POOL_SHARE,
    ArithmeticTask,
    format_answer,
    in_pool,
)
from pkpo.tasks.base import Problem

CONF = Path(__file__).parents[1] / "conf"
MODEL = OmegaConf.load(CONF / "model" / "tiny_arith.yaml")
CHARS = MODEL.pretrain.tokenizer.chars
TINY = copy.deepcopy(MODEL)
TINY.pretrain.architecture.update(  # head_dim 32: vLLM on CPU has no kernel for 16
    hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=2,
)  # fmt: skip
TINY.pretrain.optim.update(steps=4, batch_size=8, warmup_steps=2)
TINY.pretrain.eval.update(problems=3, n=2)
HAS_VLLM = importlib.util.find_spec("vllm") is not None

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(cfg) -> Path:
    """The cached build of a ``source: pretrain`` model config (trained on first use)."""
    return pretrain.cached_build(cfg.name, models.ModelSpec.from_cfg(cfg).pretrain)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PKPO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """The TINY model loaded by load_policy from a cache of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PKPO_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield load_policy(TINY)


def _with_seed(cfg, seed: int):
    other = copy.deepcopy(cfg)
    other.pretrain.seed = seed
    return other


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return LlamaForCausalLM.from_pretrained(checkpoint).state_dict()


def _prompts(tokenizer, task: ArithmeticTask, problems: list[Problem]) -> list[list[int]]:
    return encode_prompts(tokenizer, [task.prompt(p) for p in problems], use_chat_template=False)


def teacher_forced(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Log-probs (temperature 1) of ``completion`` after ``prompt`` by one forward pass."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


# ----------------------------------------------------------------------------- supervised start


def test_same_config_builds_the_same_weights_and_another_seed_does_not(cache, monkeypatch):
    first = _build(TINY)
    monkeypatch.setenv("PKPO_CACHE", str(cache.parent / "other_cache"))
    second = _build(TINY)
    reseeded = _build(_with_seed(TINY, 1))
    assert first != second and first.name == second.name  # two builds, same key
    assert reseeded.name != first.name
    a, b, c = _state(first), _state(second), _state(reseeded)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)
    digest = hashlib.sha256((first / "model.safetensors").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((second / "model.safetensors").read_bytes()).hexdigest()
    report = OmegaConf.load(first / pretrain.REPORT_FILE)
    assert report.weights_sha256 == OmegaConf.load(second / pretrain.REPORT_FILE).weights_sha256
    assert set(report.held_out) == {"main", "hard"}
    assert set(report.held_out.main) == {"pass@1", "pass@1_se"}  # ks 1, 4, 16 but n = 2


def test_a_cached_build_is_not_trained_again(cache, monkeypatch):
    checkpoint = _build(TINY)

    def no_training(*args):
        raise AssertionError("trained again although the cache holds this config")

    monkeypatch.setattr(pretrain, "build", no_training)
    assert _build(TINY) == checkpoint
    changed = copy.deepcopy(TINY)
    changed.pretrain.optim.lr = 2 * TINY.pretrain.optim.lr
    with pytest.raises(AssertionError, match="trained again"):
        _build(changed)


def test_bad_pretrain_configs_are_named():
    broken = copy.deepcopy(TINY)
    del broken.pretrain.optim
    with pytest.raises(ModelLoadError, match=r"missing keys \['optim'\]"):
        models.check_model(broken)
    repeated = copy.deepcopy(TINY)
    repeated.pretrain.tokenizer.chars = "0123456789+=0"
    with pytest.raises(ModelLoadError, match="repeats a character"):
        models.check_model(repeated)
    with pytest.raises(ModelLoadError, match=r"needs keys \['pretrain'\]"):
        models.ModelSpec.from_cfg({"name": "x", "source": "pretrain"})


def test_lr_schedule_warms_up_then_decays_to_the_final_ratio():
    assert pretrain.lr_factor(0, 10, 2, 0.1) == pytest.approx(0.5)
    assert pretrain.lr_factor(1, 10, 2, 0.1) == pytest.approx(1.0)
    assert pretrain.lr_factor(2, 10, 2, 0.1) == pytest.approx(1.0)  # cosine starts at its top
    assert pretrain.lr_factor(6, 10, 2, 0.1) == pytest.approx(0.55)  # half-way: the mean
    assert pretrain.lr_factor(10, 10, 2, 0.1) == pytest.approx(0.1)


def test_supervised_batches_mask_the_prompt_and_never_hold_rl_problems():
    tokenizer = pretrain.build_tokenizer(CHARS)
    batch = next(pretrain.batches(tokenizer, MODEL.pretrain.data, 64, seed=3))
    decoded = [tokenizer.decode(row[row != tokenizer.pad_token_id]) for row in batch["input_ids"]]
    for text, labels in zip(decoded, batch["labels"], strict=True):
        assert text.startswith("<bos>") and text.endswith("<eos>")
        question, answer = text[len("<bos>") : -len("<eos>")].split("=\n")
        a, b = map(int, question.split("+"))
        assert answer == str(a + b)[::-1]
        assert not in_pool(a, "+", b, "rl")
        kept = labels[labels != pretrain.IGNORE]  # the answer and EOS, nothing else
        assert tokenizer.decode(kept) == answer + "<eos>"


def test_answer_noise_replaces_digits_at_its_rate_and_nothing_else():
    rng = random.Random(0)
    answers = [str(rng.randrange(10**5)) for _ in range(4000)]
    noisy = [pretrain.corrupt(a + "=x", 0.5, rng) for a in answers]
    pairs = list(zip(answers, noisy, strict=True))
    assert all(n.endswith("=x") and len(n) == len(a) + 2 for a, n in pairs)
    changed = sum(c != d for a, n in pairs for c, d in zip(a, n[:-2], strict=True))
    digits = sum(len(a) for a in answers)
    # a digit is redrawn with probability 0.5 and then differs with probability 9/10
    assert changed / digits == pytest.approx(0.45, abs=0.015)
    quiet = random.Random(1)
    assert pretrain.corrupt("123", 0.0, quiet) == "123"
    assert quiet.random() == random.Random(1).random()  # noise 0 drew nothing


def test_noise_free_data_is_the_same_with_or_without_the_option():
    tokenizer = pretrain.build_tokenizer(CHARS)
    explicit = OmegaConf.merge(MODEL.pretrain.data, {"answer_noise": 0.0})
    plain = pretrain.batches(tokenizer, MODEL.pretrain.data, 32, seed=5)
    zero = pretrain.batches(tokenizer, explicit, 32, seed=5)
    for _ in range(3):  # the stream, not just its first batch: the rng is not touched
        a, b = next(plain), next(zero)
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_noisy_batches_keep_the_question_and_the_answer_length():
    noisy = group_config("model", "tiny_arith_noisy")
    data = OmegaConf.merge(MODEL.pretrain.data, noisy.pretrain.data)
    tokenizer = pretrain.build_tokenizer(CHARS)
    batch = next(pretrain.batches(tokenizer, data, 256, seed=3))
    right = 0
    for row in batch["input_ids"]:
        text = tokenizer.decode(row[row != tokenizer.pad_token_id])
        question, answer = text[len("<bos>") : -len("<eos>")].split("=\n")
        a, b = map(int, question.split("+"))
        assert len(answer) == len(str(a + b)) and answer.isdigit()
        assert not in_pool(a, "+", b, "rl")
        right += answer == str(a + b)[::-1]
    assert 0.05 < right / 256 < 0.6  # mostly wrong, often right (about 0.55 per digit)


def test_answer_noise_of_one_or_more_is_refused():
    broken = copy.deepcopy(TINY)
    broken.pretrain.data.answer_noise = 1.0
    with pytest.raises(ModelLoadError, match=r"answer_noise must be in \[0, 1\), got 1.0"):
        models.check_model(broken)


def test_the_noisy_model_differs_from_tiny_arith_only_in_its_data_optim_and_eval():
    noisy = group_config("model", "tiny_arith_noisy")
    assert noisy.name == "tiny_arith_noisy"
    differ = {key for key in MODEL.pretrain if MODEL.pretrain[key] != noisy.pretrain[key]}
    assert differ == {"data", "optim", "eval"}
    assert noisy.pretrain.data.answer_noise == 0.5
    for key in ("ops", "template", "answer_format"):  # the problems are asked the same way
        assert noisy.pretrain.data[key] == MODEL.pretrain.data[key]


# ----------------------------------------------------------------------------- tokenizer, model


def test_tokenizer_is_a_real_character_level_fast_tokenizer(tiny_policy):
    _, _, checkpoint = tiny_policy
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    text = "907+88=\n5999"
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    expected = [1] + [len(specials) + CHARS.index(c) for c in text]  # BOS, then one per char
    ids = tokenizer(text)["input_ids"]
    assert ids == expected
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.convert_ids_to_tokens(ids[:3]) == ["<bos>", "9", "0"]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 2)
    assert tokenizer("7x", add_special_tokens=False)["input_ids"] == [11, 3]  # x: <unk>


def test_model_loads_as_a_plain_llama_of_the_configured_size(tiny_policy):
    model, _, checkpoint = tiny_policy
    arch = TINY.pretrain.architecture
    d, f, layers = arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers
    vocab = 4 + len(CHARS)
    # tied embedding + per layer (q, k, v, o; gate, up, down; two RMSNorms) + final norm
    expected = vocab * d + layers * (4 * d * d + 3 * d * f + 2 * d) + d
    assert isinstance(model, LlamaForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert checkpoint.parent == cache_root() / "models"


def test_full_config_has_about_a_million_parameters():
    arch = MODEL.pretrain.architecture
    d, f, layers = arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers
    params = (4 + len(CHARS)) * d + layers * (4 * d * d + 3 * d * f + 2 * d) + d
    assert 0.7e6 < params < 1.3e6


def _check_samples(groups, prompts, model, n, max_new_tokens, eos_id) -> float:
    """Shape/EOS contract; returns the largest log-prob error against teacher forcing."""
    error = 0.0
    assert [len(group) for group in groups] == [n] * len(prompts)
    for group, prompt in zip(groups, prompts, strict=True):
        for c in group:
            assert c.prompt_ids == prompt and 1 <= len(c.token_ids) <= max_new_tokens
            assert eos_id not in c.token_ids[:-1]
            assert (c.token_ids[-1] == eos_id) == (c.finish_reason == "stop")
            reference = teacher_forced(model, prompt, c.token_ids)
            error = max(error, (reference - torch.tensor(c.logprobs)).abs().max().item())
    return error


def test_hf_sampler_samples_the_testbed_model(tiny_policy):
    model, tokenizer, _ = tiny_policy
    task = ArithmeticTask(**_task_kwargs(digits=3, n_train=0, n_test=3))
    prompts = _prompts(tokenizer, task, task.load("test"))
    sampler = HFSampler(model, tokenizer, batch_size=4)  # 9 sequences: three batches
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)
    groups = sampler.generate(prompts, 3, params)
    assert _check_samples(groups, prompts, model, 3, 6, tokenizer.eos_token_id) < 1e-4
    assert all(set(c.text) <= set(CHARS) for g in groups for c in g)


def test_the_build_reports_pass_at_k_of_the_tasks_own_scores():
    # pretrain.evaluate (the report's held_out) by hand: the HF sampler's completions as the
    # build samples them, each scored by the task, the unbiased pass@k of each problem
    # (Eq. 3: 1 - C(n - c, k) / C(n, k)) averaged, and its standard error over problems
    model, tokenizer, _ = load_policy(group_config("model", "tiny_arith_noisy"))
    model.eval()
    task = ArithmeticTask(**_task_kwargs(digits=1, n_train=0, n_test=6))
    problems, n = task.load("test"), 8
    got = pretrain.evaluate(model, tokenizer, task, problems, n, [1, 4, 16], 3, 6)
    sampler = HFSampler(model, tokenizer, batch_size=len(problems) * n)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=3)
    groups = sampler.generate(_prompts(tokenizer, task, problems), n, params)
    correct = [sum(task.score(p, c.text) for c in g) for p, g in zip(problems, groups, strict=True)]
    assert 0 < sum(correct) < len(problems) * n  # neither all right nor all wrong
    want = {}
    for k in (1, 4):  # 16 > n: no unbiased estimate, left out
        per_problem = [1 - math.comb(n - int(c), k) / math.comb(n, k) for c in correct]
        want[f"pass@{k}"] = statistics.mean(per_problem)
        want[f"pass@{k}_se"] = statistics.stdev(per_problem) / math.sqrt(len(problems))
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.slow  # starts a vLLM engine on CPU (~30-60 s)
def test_vllm_sampler_samples_the_testbed_model(tiny_policy):
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed (pip install 'pkpo[cpu]')")
    from pkpo.samplers.vllm import VLLMSampler

    model, tokenizer, checkpoint = tiny_policy
    task = ArithmeticTask(**_task_kwargs(digits=3, n_train=0, n_test=2))
    prompts = _prompts(tokenizer, task, task.load("test"))
    options = OmegaConf.to_container(OmegaConf.load(CONF / "sampler" / "auto.yaml").vllm)
    options.update(max_model_len=64, kv_cache_space_gib=1)  # the model's 64 positions
    sampler = VLLMSampler(checkpoint, **options)
    try:
        params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)
        groups = sampler.generate(prompts, 4, params)
        assert _check_samples(groups, prompts, model, 4, 6, tokenizer.eos_token_id) < 1e-3
    finally:
        sampler.close()


# ----------------------------------------------------------------------------- task format


def _task_kwargs(**overrides) -> dict:
    kwargs = dict(OmegaConf.load(CONF / "task" / "tiny_arith.yaml"))
    del kwargs["_target_"]
    return {**kwargs, **overrides}


def _problem(a: int, op: str, b: int, result: int) -> Problem:
    return Problem(f"arith-{a}{op}{b}", f"{a} {op} {b}", result, {"a": a, "op": op, "b": b})


@pytest.mark.parametrize(
    ("a", "op", "b", "result", "completion", "reward"),
    [
        (123, "+", 456, 579, "975", 1.0),
        (123, "+", 456, 579, "975\n", 1.0),  # surrounding whitespace is not part of the answer
        (123, "+", 456, 579, "579", 0.0),  # most-significant digit first: wrong
        (123, "+", 456, 579, "976", 0.0),
        (123, "+", 456, 579, "9750", 0.0),  # = 0579: a leading zero is malformed
        (123, "+", 456, 579, "97 5", 0.0),
        (123, "+", 456, 579, "975=", 0.0),
        (123, "+", 456, 579, "975975", 0.0),
        (123, "+", 456, 579, "", 0.0),
        (123, "+", 456, 579, "-975", 0.0),
        (500, "+", 500, 1000, "0001", 1.0),  # trailing zeros lead in reversed order
        (500, "+", 500, 1000, "001", 0.0),
        (12, "-", 345, -333, "-333", 1.0),
        (50, "-", 20, 30, "03", 1.0),
        (50, "-", 20, 30, "3", 0.0),
        (0, "+", 0, 0, "0", 1.0),
        (0, "+", 0, 0, "-0", 0.0),
        (0, "+", 0, 0, "00", 0.0),
        (0, "+", 0, 0, "9" * 5000, 0.0),  # no integer conversion of arbitrary output
    ],
)
def test_reversed_answers_are_scored_exactly(a, op, b, result, completion, reward):
    task = ArithmeticTask(**_task_kwargs(ops=["+", "-"], n_train=0, n_test=0))
    assert task.score(_problem(a, op, b, result), completion) == reward


def test_reversed_format():
    written = {0: "0", 7: "7", 10: "01", 579: "975", 90210: "01209", -333: "-333", -40: "-04"}
    for value, text in written.items():
        assert format_answer(value, "reversed") == text
    assert format_answer(1000, "reversed") == "0001"
    assert format_answer(-12, "reversed") == "-21"
    assert format_answer(-12, "plain") == "-12"
    with pytest.raises(ValueError, match="answer_format must be one of"):
        ArithmeticTask(answer_format="backwards")


def test_testbed_prompt_and_target():
    task = ArithmeticTask(**_task_kwargs(n_train=0, n_test=0))
    problem = _problem(123, "+", 456, 579)
    assert task.prompt(problem) == [{"role": "user", "content": "123+456="}]
    assert task.target(problem) == "975"


def test_rl_pool_is_the_hashed_share_and_disjoint_from_the_supervised_one():
    def reserved(a, op, b):  # the definition, written out
        digest = hashlib.sha256(f"{a}{op}{b}".encode()).hexdigest()
        return int(digest[:16], 16) % RL_POOL_SHARE == 0

    task = ArithmeticTask(**_task_kwargs(digits=3, n_train=300, n_test=200))
    problems = task.load("train") + task.load("test")
    assert len({p.id for p in problems}) == 500
    assert all(reserved(p.meta["a"], "+", p.meta["b"]) for p in problems)
    assert all(100 <= p.meta["a"] <= 999 and 100 <= p.meta["b"] <= 999 for p in problems)
    rng = random.Random(0)
    supervised = ArithmeticTask(**_task_kwargs(pool="supervised", n_train=0, n_test=0))
    assert not any(
        reserved(p.meta["a"], "+", p.meta["b"]) for p in (supervised.draw(rng) for _ in range(500))
    )
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    share = sum(reserved(a, "+", b) for a, b in pairs) / len(pairs)
    assert abs(share - 1 / RL_POOL_SHARE) < 0.02
    two_digit = ArithmeticTask(**_task_kwargs(digits=2, n_train=0, n_test=0))
    assert two_digit._pool_size() == sum(reserved(a, "+", b) for a, b in pairs)
    with pytest.raises(ValueError, match="pool must be one of"):
        ArithmeticTask(pool="validation")


@pytest.mark.parametrize(
    ("sweep", "task"),
    [("tiny_arith_noisy", "tiny_arith"), ("tiny_arith_noisy_hard", "tiny_arith_3d_hard")],
)
def test_the_noisy_configs_compose_to_what_the_committed_sweeps_ran(sweep, task):
    # the configs inherit (defaults lists); each committed run of the pilot saved the config it
    # composed, when the model was still built from `pretrain` (source: pretrain) rather than
    # loaded pinned: the settings its weights came from must be the pinned model's
    results = Path(__file__).parents[1] / "experiments" / "results" / sweep
    saved = [OmegaConf.load(path) for path in sorted(results.glob("*/config.yaml"))]
    assert len(saved) >= 20
    model = OmegaConf.to_container(group_config("model", "tiny_arith_noisy"))
    task_cfg = OmegaConf.to_container(group_config("task", task))
    for cfg in saved:
        old = OmegaConf.to_container(cfg.model)
        assert old["source"] == "pretrain" and model["source"] == "local"
        assert source_record(old["pretrain"]) == source_record(model["pretrain"])
        assert OmegaConf.to_container(cfg.task) == task_cfg
