"""PKPO advantages for TRL's ``GRPOTrainer`` (tested with trl 1.16.0).

Usage: build a ``PKPOConfig`` (a ``GRPOConfig`` with ``pkpo_*`` fields) and use
``PKPOGRPOTrainer`` where you would use ``GRPOTrainer``; everything else is TRL's.

Where TRL computes advantages, and why two methods are overridden: in trl 1.16,
``GRPOTrainer._generate_and_score_completions`` gets the rewards of the whole generation
batch of every process from ``_calculate_rewards`` (which ends with ``gather``), computes
group-normalised advantages inline, then keeps this process's slice. No method takes the
gathered rewards and returns advantages, so the least invasive correct override is:

1. ``_calculate_rewards``: call TRL's and keep its (gathered, all-process) result;
2. ``_generate_and_score_completions``: call TRL's, then recompute the advantages from the
   kept rewards on whole groups of ``num_generations`` samples with the PKPO transform and
   put this process's slice in the output, the same gather -> transform -> slice order TRL
   uses for its own advantages. TRL shuffles and splits the batch into micro-batches only
   after this method returns, so the loss sees the PKPO advantages.

The k_opt of a generation batch is the schedule's value at ``state.global_step`` when the
batch is generated (with ``steps_per_generation`` or ``num_iterations`` > 1 one batch serves
several optimizer steps).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer

from pkpo import metrics, schedules, transforms
from pkpo.estimators import check_k as check_k_range

logger = logging.getLogger(__name__)

#: k_eval values whose pass@k is logged (the paper's, §5.2), those <= the group size.
K_EVAL = (1, 2, 4, 8, 12, 16)
SOLVE_RATE = "pkpo/cumulative_solve_rate"


@dataclass
class PKPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the PKPO transform and its k_opt (schedule).

    GRPOConfig options that interact with PKPO:

    * ``num_generations`` is n, the group size: every k_opt must be <= n (``pkpo_sloo`` and
      ``pkpo_sloo_centred`` need k < n). ``num_generations_eval`` likewise for eval batches.
    * ``scale_rewards`` must be ``"none"`` (the default here): the PKPO transform is the
      whole advantage, its k/n scale included (Eq. 19); dividing by a reward std would change
      the estimator. GRPO's ``"group"``/``"batch"`` scaling is therefore rejected.
    * ``multi_objective_aggregation`` must be ``"sum_then_normalize"``: the weighted sum of
      the reward functions (``reward_weights``) is the reward g whose max_g@k is optimised.
    * ``loss_type`` defaults to ``"dr_grpo"`` here: token losses are summed per sequence and
      divided by a constant, so the update is the sequence-level estimator
      ``sum_i A_i grad log pi(y_i)`` (Eq. 18) up to a constant. ``"dapo"`` (TRL's default)
      divides by the batch's token count, which varies between steps; ``"grpo"`` averages
      each sequence over its own length and so weights short completions more.
    * ``beta``, ``epsilon``, ``num_iterations`` (KL and PPO clipping) apply unchanged on top.
      PKPO advantages are not std-normalised and carry the k/n factor, so they are smaller
      than GRPO's: retune ``learning_rate`` when switching.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["pkpo_schedule_kwargs"]

    pkpo_transform: str = field(
        default="pkpo_sloo_minus_one",
        metadata={
            "help": "Name of a reward transform in pkpo.transforms (any of "
            "pkpo.transforms.names(), e.g. pkpo_sloo_minus_one, maxpo, grpo)."
        },
    )
    pkpo_k: int = field(
        default=4,
        metadata={"help": "k_opt of the 'constant' schedule (the pass@k to optimise)."},
    )
    pkpo_schedule: str = field(
        default="constant",
        metadata={"help": "k_opt schedule in pkpo.schedules: constant, step or linear."},
    )
    pkpo_schedule_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the schedule, e.g. {'k_start': 8, 'k_end': 1, "
            "'switch_step': 1500} for 'step' (the paper's annealing); 'constant' uses pkpo_k."
        },
    )
    pkpo_solve_threshold: float = field(
        default=1.0,
        metadata={"help": "A prompt counts as solved once a sample's reward reaches this."},
    )
    scale_rewards: str = field(
        default="none",
        metadata={"help": "Must be 'none': the PKPO transform replaces GRPO's normalisation."},
    )
    loss_type: str = field(
        default="dr_grpo",
        metadata={"help": "TRL loss aggregation; 'dr_grpo' keeps the sequence-level estimator."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_rewards != "none":
            raise ValueError(
                f"PKPOConfig: scale_rewards={self.scale_rewards!r} would divide the PKPO "
                "advantages by a reward std, which the transform does not expect; set "
                "scale_rewards='none'"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"PKPOConfig: multi_objective_aggregation={self.multi_objective_aggregation!r}"
                " normalises each reward function before PKPO sees it; PKPO optimises the "
                "max@k of the weighted reward sum, so use 'sum_then_normalize'"
            )
        transforms.get(self.pkpo_transform)  # unknown names fail here, listing the known ones
        steps = self.max_steps if self.max_steps > 0 else 1
        for n in {self.num_generations, self.num_generations_eval or self.num_generations}:
            validate_schedule(self.pkpo_transform, self.k_schedule(), n, steps)

    def k_schedule(self) -> schedules.Schedule:
        """The configured k_opt schedule, ``step -> k``."""
        kwargs = dict(self.pkpo_schedule_kwargs or {})
        if self.pkpo_schedule == "constant":
            kwargs.setdefault("k_opt", self.pkpo_k)
        return schedules.make_schedule(self.pkpo_schedule, **kwargs)


def validate_schedule(name: str, schedule: schedules.Schedule, n: int, steps: int) -> None:
    """Fail before training if transform ``name`` cannot run with some k the schedule takes."""
    for k in sorted(schedules.k_values(schedule, steps)):
        check_k(k, n, where=f"k_opt schedule over {steps} steps")
    schedules.check_schedule(name, schedule, n, steps)


def check_k(k: object, n: int, where: str) -> int:
    """``k`` as an int if it is one in ``[1, n]`` (``estimators.check_k``), else a ValueError
    saying where it came from and what n is here."""
    try:
        return check_k_range(k, n, f"pkpo: {where} gave k_opt={k!r}")
    except ValueError as err:
        raise ValueError(
            f"{err} (n is num_generations, or num_generations_eval in evaluation)"
        ) from None


def group_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """Rewards ``[num_groups, n]`` (float64) from TRL's gathered ``[num_samples, num_funcs]``.

    The reward of a sample is the ``reward_weights``-weighted sum over reward functions, as
    in TRL. A function that returned None (NaN) adds nothing, so a sample no function could
    score gets reward 0: PKPO needs every group complete, and an unscorable completion is a
    failed one. Rows are in TRL's order: the n samples of a prompt are consecutive.
    """
    unscorable = int(torch.isnan(rewards_per_func).all(dim=1).sum())
    if unscorable:
        logger.warning("pkpo: %d completions got no reward from any function; scored 0", unscorable)
    weights = weights.to(device=rewards_per_func.device, dtype=torch.float64)
    rewards = (rewards_per_func.to(torch.float64) * weights).nansum(dim=1)
    if rewards.numel() % n:
        raise ValueError(f"pkpo: {rewards.numel()} rewards do not form whole groups of n={n}")
    return rewards.view(-1, n)


def prompt_key(prompt: Any) -> str:
    """A hashable identity for a prompt (plain text, or a conversation as JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def group_keys(prompts: Sequence[Any], n: int) -> list[str]:
    """One key per group of n consecutive prompts; the members of a group must be equal."""
    keys = [prompt_key(p) for p in prompts]
    groups = [keys[i : i + n] for i in range(0, len(keys), n)]
    for g, members in enumerate(groups):
        if len(set(members)) != 1:
            raise ValueError(
                f"pkpo: group {g} mixes different prompts; TRL's sampler should repeat each "
                f"prompt num_generations={n} times in a row"
            )
    return [members[0] for members in groups]


def distinct_prompts(dataset: Any) -> int | None:
    """Number of distinct prompts in a dataset with a length and a 'prompt' column, else None.

    Streams (``IterableDataset``) give None: reading their column would consume the stream.
    """
    if not isinstance(dataset, Sized):
        return None
    try:
        column = dataset["prompt"]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return len({prompt_key(p) for p in column})


class PKPOGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages are ``pkpo.transforms.transform`` on whole groups.

    Takes GRPOTrainer's arguments, with ``args`` a ``PKPOConfig``. ``pkpo_k_schedule``
    (``step -> k_opt``) overrides the configured schedule for schedules a config cannot name.
    Logs, through TRL's logger: ``pkpo/k_opt``, ``pkpo/pass@k`` (mean over prompts of the
    unbiased estimator rho, Eq. 12; max_g@k for non-binary rewards) for k in ``K_EVAL`` up
    to n, and in training ``pkpo/cumulative_solve_rate``: the fraction of the training
    set's distinct prompts (of those seen so far, if the dataset has no length) with at least
    one sample scoring ``>= pkpo_solve_threshold``.
    """

    def __init__(
        self,
        *args: Any,
        pkpo_k_schedule: Callable[[int], int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, PKPOConfig):
            raise TypeError(
                f"PKPOGRPOTrainer needs args=PKPOConfig(...), got {type(self.args).__name__}"
            )
        self.pkpo_k_schedule = pkpo_k_schedule or self.args.k_schedule()
        if pkpo_k_schedule is not None:
            steps = self.args.max_steps if self.args.max_steps > 0 else 1
            validate_schedule(
                self.args.pkpo_transform, pkpo_k_schedule, self.num_generations, steps
            )
        self._pkpo_rewards_per_func: torch.Tensor | None = None
        dataset_prompts = distinct_prompts(self.train_dataset)
        self._pkpo_seen: set[str] | None = set() if dataset_prompts is None else None
        self._pkpo_solved = metrics.SolveTracker(
            dataset_prompts or 0, threshold=self.args.pkpo_solve_threshold
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._pkpo_rewards_per_func = rewards_per_func  # all processes' samples, in group order
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._pkpo_rewards_per_func = self._pkpo_rewards_per_func, None
        if rewards_per_func is None:
            raise RuntimeError(
                "pkpo: GRPOTrainer did not score this batch through _calculate_rewards; this "
                "TRL version computes advantages differently from trl 1.16, which PKPO supports"
            )
        mode = "train" if self.model.training else "eval"
        n = self.num_generations if mode == "train" else self.num_generations_eval
        rewards = group_rewards(rewards_per_func, self.reward_weights, n)
        step = self.state.global_step
        k = check_k(self.pkpo_k_schedule(step), n, where=f"k_opt schedule at step {step}")
        advantages = transforms.transform(self.args.pkpo_transform, rewards, k).reshape(-1)

        start = self.accelerator.process_index * len(inputs)
        local = advantages[start : start + len(inputs)]
        output["advantages"] = local.to(output["advantages"])
        self._replace_logged_advantages(advantages)
        self._log_pkpo_metrics(mode, rewards, k, [x.get("prompt") for x in inputs])
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # TRL averages a metric over the logging interval; a cumulative rate should be its
        # latest value instead.
        values = self._metrics["train"].get(SOLVE_RATE)
        if values:
            self._metrics["train"][SOLVE_RATE] = values[-1:]
        super().log(logs, start_time)

    def _replace_logged_advantages(self, advantages: torch.Tensor) -> None:
        """Swap the GRPO advantages TRL just logged for completion tables for PKPO's."""
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_pkpo_metrics(
        self, mode: str, rewards: torch.Tensor, k: int, local_prompts: list[Any]
    ) -> None:
        n = rewards.shape[-1]
        record = self._metrics[mode]
        record["pkpo/k_opt"].append(float(k))
        rewards_np = rewards.cpu().numpy()
        for name, value in metrics.pass_at_k_metrics(
            rewards_np, [j for j in K_EVAL if j <= n]
        ).items():
            record[f"pkpo/{name}"].append(value)
        if mode != "train":
            return
        # every process sees all groups' rewards, so each gathers all prompts and agrees
        keys = group_keys(gather_object(local_prompts), n)
        self._pkpo_solved.update(keys, rewards_np)
        if self._pkpo_seen is not None:
            self._pkpo_seen.update(keys)
            self._pkpo_solved.num_problems = len(self._pkpo_seen)
        record[SOLVE_RATE].append(self._pkpo_solved.rate)
