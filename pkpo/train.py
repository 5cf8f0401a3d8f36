"""The PKPO RL loop (``pkpo-train``): sample n per prompt, score, transform jointly, PPO.

Per step t (the paper's recipe, §5.2):

1. k_opt <- schedule(t)
2. draw ``prompts_per_step`` problems; sample ``n`` completions of each
3. score every completion with the task's verifier (in worker processes)
4. advantages <- transform(name, rewards[B, n], k_opt, scale), one group per row (PKPO)
5. PPO update of the policy with those advantages; push the new weights to the sampler
6. log pass@k_eval, cumulative solve rate, entropy, timings; evaluate and checkpoint

Every part is chosen by config (``conf/``): model, task, sampler, transform, schedule,
trainer, logger. ``pkpo-train resume=<run folder>`` (or re-running with the same
``run_dir``, as a Slurm requeue does) continues from the last checkpoint, with the config
the folder holds: one process writes to a run folder at a time, and a resume that would
train differently is refused unless ``resume_allow`` names the keys it changes
(:mod:`pkpo.resume`, :mod:`pkpo.rundir`).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pkpo import (
    checkpoint,
    config,
    metrics,
    models,
    plugins,
    pretrain,  # noqa: F401 - registers the builder of `source: pretrain` models
    rundir,
    transforms,
)
from pkpo.config import CONF_DIR
from pkpo.logger import SCHEMA_VERSION, EventLog
from pkpo.prompts import encode_prompts
from pkpo.resume import resolve_run
from pkpo.rollouts import ScoredRollout, sample_and_score
from pkpo.samplers import sampling_params
from pkpo.scoring import Scorer
from pkpo.tasks.base import Problem
from pkpo.trainers.base import PPOBatch

log = logging.getLogger("pkpo.train")


class Timer:
    """Wall time per phase of one step."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self.times[f"time/{phase}"] = self.times.get(f"time/{phase}", 0.0) + (
            time.perf_counter() - start
        )


def problems_for_step(problems: list[Problem], step: int, size: int, seed: int) -> list[Problem]:
    """The step's prompts: epochs of seeded permutations, so any step is reproducible
    from (seed, step) alone and a resumed run sees the same data as an uninterrupted one."""
    out = []
    for j in range(step * size, (step + 1) * size):
        epoch, pos = divmod(j, len(problems))
        order = np.random.default_rng([seed, epoch]).permutation(len(problems))
        out.append(problems[order[pos]])
    return out


PHASES = ("train", "eval")


def sample_seed(seed: int, phase: str, step: int, rank: int) -> int:
    """A non-negative sampling seed per (run seed, phase, step, rank): reproducible from
    those alone (so a resumed run samples as an uninterrupted one) and independent across
    ranks, which sample different prompts."""
    entropy = [seed, PHASES.index(phase), step, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


PolicyLoader = Callable[[DictConfig], tuple[Any, Any, Path]]
"""``models.load_policy``'s signature: model config -> (model, tokenizer, checkpoint folder)."""


class Run:
    """The loop's state and parts; ``run`` builds one and calls ``train``.

    ``load_policy`` and ``transform`` (``transforms.transform``'s signature) are the model
    loader and the reward transform; a test passes its own to see what reaches them.
    ``config_changes`` (:attr:`pkpo.resume.RunFolder.changes`) are logged as a
    ``config_change`` event at the step the run starts from.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        *,
        load_policy: PolicyLoader = models.load_policy,
        transform: Callable[..., torch.Tensor] = transforms.transform,
        config_changes: dict[str, list[Any]] | None = None,
    ):
        self.cfg = cfg
        self.config_changes = config_changes or {}
        self.run_dir = run_dir
        self.task = instantiate(cfg.task)
        self.train_set = self.task.load(cfg.task.train_split)
        eval_set = self.task.load(cfg.task.eval_split) if cfg.eval.problems else []
        self.eval_set = eval_set[: cfg.eval.problems]
        if not self.train_set:
            raise config.ConfigError(f"task {cfg.task.name}: split {cfg.task.train_split} is empty")
        # Every part is built from its config's _target_; only these runtime objects are
        # passed in (the model config is a spec of where weights live, see pkpo.models).
        model, self.tokenizer, ckpt_path = load_policy(cfg.model)
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        self.trainer = instantiate(cfg.trainer, model=model, pad_id=pad_id, _convert_="all")
        self.sampler = instantiate(
            cfg.sampler,
            model=self.trainer.model,
            tokenizer=self.tokenizer,
            checkpoint_path=ckpt_path,
            _convert_="all",
        )
        self.scorer = Scorer(self.task, cfg.score_workers, cfg.score_timeout_s)
        self.schedule = instantiate(cfg.schedule)
        self.solved = metrics.SolveTracker(len(self.train_set))
        main = self.trainer.is_main
        self.events = EventLog(run_dir, _wandb_run(cfg, run_dir)) if main else None
        self.transform = transform
        self.step = 0

    def log(self, event: str, **fields: Any) -> None:
        """Write an event (on the main rank only)."""
        if self.events is not None:
            self.events.write(event, **fields)

    # ------------------------------------------------------------------ pieces

    def encode(self, problems: list[Problem]) -> list[list[int]]:
        messages = [self.task.prompt(p) for p in problems]
        return encode_prompts(self.tokenizer, messages, self.cfg.model.chat_template)

    def rollout(self, problems: list[Problem], n: int, phase: str, timer: Timer) -> ScoredRollout:
        """Sample n completions of each of this rank's share of ``problems`` and score them
        (``pkpo.rollouts``); each failed scoring is logged as a ``score_failure`` event."""
        local = self.trainer.shard(problems)
        with timer("sample"):  # time/sample (and so tokens_per_s) includes preparing the prompts
            seed = sample_seed(self.cfg.seed, phase, self.step, self.trainer.rank)
            params = sampling_params(self.cfg.sampler, seed)
            prompt_ids = self.encode(local)
        rollout = sample_and_score(
            self.sampler,
            self.scorer,
            local,
            prompt_ids,
            n,
            params,
            timer=timer,
            gather=self.trainer.gather,
        )
        for f in rollout.local_failures:
            self.log("score_failure", step=self.step, problem_id=f.problem_id, error=f.error)
        return rollout

    def evaluate(self) -> None:
        if not self.eval_set:
            return
        timer = Timer()
        rollout = self.rollout(self.eval_set, self.cfg.eval.n, "eval", timer)
        self.log(
            "eval",
            step=self.step,
            split=self.cfg.task.eval_split,
            num_problems=len(self.eval_set),
            n_eval=self.cfg.eval.n,
            reward_mean=float(rollout.rewards.mean()),
            score_failures=rollout.score_failures,
            score_timeouts=rollout.score_timeouts,
            **metrics.pass_at_k_metrics(rollout.rewards, list(self.cfg.k_eval), with_se=True),
            **metrics.per_problem_outcomes([p.id for p in self.eval_set], rollout.rewards),
            **timer.times,
        )

    def train_step(self) -> dict[str, Any]:
        cfg, timer = self.cfg, Timer()
        start = time.perf_counter()
        k_opt = self.schedule(self.step)
        problems = problems_for_step(self.train_set, self.step, cfg.prompts_per_step, cfg.seed)
        rollout = self.rollout(problems, cfg.n, "train", timer)
        completions, rewards = rollout.completions, rollout.rewards
        with timer("transform"):
            advantages = self.transform(
                cfg.transform.name,
                torch.from_numpy(rollout.local_rewards),
                k_opt,
                scale=cfg.transform.get("scale", "paper"),
            )
        all_advantages = torch.from_numpy(self.trainer.gather(advantages.numpy()))
        flat = [c for group in completions for c in group]
        batch = PPOBatch(
            prompt_ids=[c.prompt_ids for c in flat],
            completion_ids=[c.token_ids for c in flat],
            advantages=advantages.reshape(-1).float(),
            group=[b for b, group in enumerate(completions) for _ in group],
        )
        with timer("update"):
            stats = self.trainer.update(batch)
        with timer("sync"), self.trainer.gathered_weights():
            self.sampler.sync_weights(self.trainer.model)
        self.solved.update([p.id for p in problems], rewards)
        sampled = int(self.trainer.gather(np.array([[sum(len(c.token_ids) for c in flat)]])).sum())
        record = {
            "step": self.step,
            "k_opt": k_opt,
            "transform": cfg.transform.name,
            **metrics.pass_at_k_metrics(rewards, list(cfg.k_eval)),
            "cumulative_solve_rate": self.solved.rate,
            "solved": len(self.solved.solved),
            "num_problems": self.solved.num_problems,
            "reward_mean": float(rewards.mean()),
            "adv_mean": float(all_advantages.mean()),
            "adv_std": float(all_advantages.std()),
            "adv_abs_max": float(all_advantages.abs().max()),
            **stats,
            "score_failures": rollout.score_failures,
            "score_timeouts": rollout.score_timeouts,
            "sampled_tokens": sampled,
            "tokens_per_s": sampled / max(timer.times["time/sample"], 1e-9),
            **metrics.memory_peaks(),
            **timer.times,
            # the step's own log line is the one phase this cannot include
            "time/step": time.perf_counter() - start,
        }
        with timer("log"):
            self.log("train", **record)
        record["time/log"] = timer.times["time/log"]
        return record

    # ------------------------------------------------------------------ state

    def save(self) -> None:
        extra = {
            "step": self.step,
            "solved": sorted(self.solved.solved),
            "rng": checkpoint.rng_state(),
        }
        directory = self.run_dir / "checkpoints"
        start = time.perf_counter()
        self.trainer.save(directory, extra)
        seconds = time.perf_counter() - start
        self.log("checkpoint", step=self.step, path=str(directory), seconds=seconds)

    def restore(self) -> bool:
        extra = self.trainer.load(self.run_dir / "checkpoints")
        if extra is None:
            return False
        with self.trainer.gathered_weights():
            self.sampler.sync_weights(self.trainer.model)
        self.solved.solved = set(extra["solved"])
        checkpoint.set_rng_state(extra["rng"])
        self.step = extra["step"]
        return True

    # ------------------------------------------------------------------ loop

    def train(self) -> None:
        cfg = self.cfg
        resumed = self.restore()
        self.log(
            "start",
            schema=SCHEMA_VERSION,
            run_dir=str(self.run_dir),
            resumed_from_step=self.step if resumed else None,
            config_sha256=rundir.config_hash(cfg),
        )
        if self.config_changes:
            self.log("config_change", step=self.step, changes=self.config_changes)
        if not resumed and cfg.eval.at_start:
            self.evaluate()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="pkpo",
            unit="step",
            dynamic_ncols=True,
            disable=not self.trainer.is_main,
        )
        try:
            while self.step < cfg.steps:
                record = self.train_step()
                self.step += 1
                done = self.step == cfg.steps
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or done):
                    self.evaluate()
                elif done and cfg.eval.at_end:
                    self.evaluate()
                if done or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
                bar.update(1)
                bar.set_postfix(
                    reward=f"{record['reward_mean']:.3f}",
                    **{"pass@1": f"{record['pass@1']:.3f}"},
                    solved=f"{record['cumulative_solve_rate']:.2f}",
                    k=record["k_opt"],
                )
            self.log("end", step=self.step, status="finished", error=None)
        except BaseException as e:
            error = str(e) if isinstance(e, rundir.WriteFailed) else repr(e)
            try:
                self.log("end", step=self.step, status="failed", error=error[:1000])
            except rundir.WriteFailed:
                pass  # the log itself cannot be written: the error line says why
            raise
        finally:
            bar.close()
            self.close()

    def close(self) -> None:
        self.scorer.close()
        self.sampler.close()
        if self.events is not None:
            self.events.close()


def _wandb_run(cfg: DictConfig, run_dir: Path):
    mode = cfg.logger.wandb.mode
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=cfg.logger.wandb.project,
        entity=cfg.logger.wandb.entity,
        mode=mode,
        dir=str(run_dir),
        name=run_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
        resume="allow",
        id=cfg.logger.wandb.get("id") or None,
    )


def dry_run(
    cfg: DictConfig, check_model: Callable[[DictConfig], None] = models.check_model
) -> None:
    """``dry_run=true``: validate the config, check that the model's source exists (package,
    folder, cache; ``check_model``) and the ``resume`` folder, build the task with its splits,
    then stop (before the model loads and before a run folder is written)."""
    check_model(cfg.model)
    if cfg.resume and not (Path(cfg.resume).expanduser() / "config.yaml").is_file():
        raise config.ConfigError(f"resume={cfg.resume}: no config.yaml in that folder")
    task = instantiate(cfg.task)
    train, held_out = task.load(cfg.task.train_split), task.load(cfg.task.eval_split)
    print(
        f"[pkpo] dry run: config valid; task {task.name}: {len(train)} train problems "
        f"({cfg.task.train_split}), {len(held_out)} held-out ({cfg.task.eval_split}); "
        f"model {cfg.model.name}, transform {cfg.transform.name}; nothing was trained",
        flush=True,
    )


def _remove_hydra_files() -> None:
    """Remove what Hydra wrote before the job (its ``.hydra/`` configs and the job's log)
    and then the run folder and its dated parents where that leaves them empty: a dry run
    writes no run folder. Nothing else is touched (``hydra.run.dir`` may name any folder)."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    if hydra.output_subdir is not None:
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (folder / hydra.output_subdir / name).unlink(missing_ok=True)
    (folder / f"{hydra.job.name}.log").unlink(missing_ok=True)
    stop = Path.cwd().resolve()
    subdir = [] if hydra.output_subdir is None else [folder / hydra.output_subdir]
    for empty in (*subdir, folder, *folder.parents):
        if empty.resolve() == stop:
            break
        try:
            empty.rmdir()
        except OSError:  # not empty: someone else's files stay
            break


def run(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    *,
    check_model: Callable[[DictConfig], None] = models.check_model,
    load_policy: PolicyLoader = models.load_policy,
) -> Path | None:
    """Validate, build and train; returns the run folder (None for a dry run).

    ``overrides`` are the command line's ``key=value`` strings (what a ``resume=`` may
    change, :func:`resolve_run`). ``check_model`` and ``load_policy`` are the model's
    start-up check and loader (as in ``Run``: a test passes its own to see whether they are
    reached).
    """
    config.validate(cfg)
    if cfg.dry_run:
        try:
            dry_run(cfg, check_model)
        finally:
            _remove_hydra_files()
        return None
    folder = resolve_run(cfg, overrides)
    try:
        cfg, run_dir = folder.cfg, folder.path
        config.validate(cfg)  # a resumed run's config comes from its folder
        check_model(cfg.model)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)  # noqa: NPY002 - for libraries that use the global RNG
        torch.manual_seed(cfg.seed)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.set_float32_matmul_precision(cfg.matmul_precision)
        print(f"[pkpo] run folder: {run_dir}", flush=True)
        loop = Run(cfg, run_dir, load_policy=load_policy, config_changes=folder.changes)
        loop.train()
    finally:
        if folder.lock is not None:
            folder.lock.release()
    if loop.trainer.is_main:  # the closing summary: what the run did, and its figure
        from pkpo import summary  # pandas, scipy, matplotlib: loaded only here

        print(summary.summarize(run_dir), flush=True)
    return run_dir


def user_error(err: Exception) -> str | None:
    """The one line a bad config or an unloadable model gets (None: not a user error).
    Hydra wraps a constructor's ``ValueError`` / ``TypeError``: its key and cause are kept."""
    if isinstance(err, config.ConfigError | models.ModelLoadError | rundir.RunFolderError):
        return str(err)
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        if isinstance(cause, ValueError | TypeError):
            key = str(err).rsplit("full_key:", 1)[-1].strip() if "full_key:" in str(err) else "?"
            return f"{key}: {cause}"
    return None


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra's command line; a user error (``user_error``) gets one line on stderr and exit
    status 2, a failed write into the run folder (a full disk) one line and exit status 1."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(cfg, HydraConfig.get().overrides.task)
    except Exception as err:
        line = user_error(err)
        if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"pkpo-train: error: {' '.join(line.split())}", file=sys.stderr, flush=True)
        sys.exit(1 if isinstance(err, rundir.WriteFailed) else 2)


def main() -> None:
    """``pkpo-train``: imports the ``PKPO_PLUGINS`` modules first (:mod:`pkpo.plugins`), so
    that the transforms they register are options of the ``transform`` group, checks that
    each ``group=option`` exists (one line if not), then runs Hydra's command line (with
    ``resume=<folder>``, in that folder)."""
    try:
        plugins.load()
        config.store_transforms()  # the plugins' transforms are options of `transform`
        config.check_group_choices(sys.argv[1:])
    except (plugins.PluginError, config.ConfigError) as err:
        print(f"pkpo-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    resume = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("resume=")]
    if (
        resume
        and (Path(resume[-1]).expanduser() / "config.yaml").is_file()
        and not any(a.startswith("hydra.run.dir=") for a in sys.argv[1:])
    ):  # Hydra's output goes to the resumed folder, not to a new, empty one named by defaults
        sys.argv += [f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]
    _hydra_main()


if __name__ == "__main__":
    main()
