"""One place for the toy figures' colours, so every figure (the RL ones too) agrees.

``K_COLORS[k]`` is the colour of pass@k / max_g@k curves for k = 1..32, fixed whatever
subset of k a figure shows. Colours run along matplotlib's "turbo" map (blue -> green ->
red) with k = 1..8 evenly spaced (Figure 2 shows them all) and 16 and 32 after them; the
k in between are placed by log2(k) between those anchors.
"""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np

K_MAX = 32

# turbo's darkest and palest ends are hard to read on white, so use [0.05, 0.95].
_CMAP = mpl.colormaps["turbo"]
_ANCHOR_K = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)
_ANCHOR_POS = np.linspace(0.05, 0.95, len(_ANCHOR_K))


def _position(k: int) -> float:
    return float(np.interp(math.log2(k), np.log2(_ANCHOR_K), _ANCHOR_POS))


K_COLORS: dict[int, tuple[float, float, float, float]] = {
    k: _CMAP(_position(k)) for k in range(1, K_MAX + 1)
}

# Figure 4: one colour, marker and legend label per gradient estimator (gradients.ESTIMATORS).
ESTIMATOR_STYLE: dict[str, dict[str, object]] = {
    "s": {"color": "tab:gray", "marker": "o", "label": "all subsets, no baseline: s (Eq. 19)"},
    "sloo": {"color": "tab:blue", "marker": "s", "label": "all subsets baselined: sloo (Eq. 29)"},
    "sloo_minus_one": {
        "color": "tab:green",
        "marker": "D",
        "label": "loo minus one, all subsets: sloo_minus_one (Eq. 33)",
    },
    "sloo_centred": {
        "color": "tab:red",
        "marker": "*",
        "label": "centred baseline: sloo_centred (beyond the paper)",
    },
    "naive_partitioned": {
        "color": "tab:brown",
        "marker": "v",
        "label": "naive partitioned, no baseline",
    },
    "naive_partitioned_baselined": {
        "color": "tab:orange",
        "marker": "^",
        "label": "naive partitioned, baselined",
    },
    "sloo_minus_one_partitioned": {
        "color": "tab:purple",
        "marker": "P",
        "label": "loo minus one, partitioned",
    },
}

# Figure 5 panels, in the paper's order (a), (b), (c).
TRANSFORM_TITLES: dict[str, str] = {
    "s": "(a) no baseline: s (Eq. 19)",
    "sloo": "(b) LOO baseline: sloo (Eq. 29)",
    "sloo_minus_one": "(c) LOO-minus-one baseline: sloo_minus_one (Eq. 33)",
}

# Figure 4+: one style per registered transform (pkpo.transforms); ``maxpo`` equals
# ``pkpo_sloo_centred`` exactly, so it is drawn dashed with hollow markers over it.
TRANSFORM_STYLE: dict[str, dict[str, object]] = {
    "pkpo_sloo": {"color": "tab:blue", "marker": "s", "ls": "-"},
    "pkpo_sloo_minus_one": {"color": "tab:green", "marker": "D", "ls": "-"},
    "pkpo_sloo_centred": {"color": "tab:red", "marker": "*", "ls": "-"},
    "maxpo": {"color": "black", "marker": "o", "ls": "--"},
    "tang": {"color": "tab:purple", "marker": "P", "ls": "-"},
    "grpo_passk": {"color": "tab:pink", "marker": "x", "ls": "--"},
    "raw": {"color": "tab:gray", "marker": "v", "ls": "-"},
    "loo": {"color": "tab:brown", "marker": "^", "ls": "-"},
    "dr_grpo": {"color": "tab:orange", "marker": "<", "ls": "--"},
    "grpo": {"color": "tab:olive", "marker": ">", "ls": "-"},
}

# markers for transforms registered elsewhere (plugins), in registry order after those above
_OTHER_MARKERS = ("h", "p", "d", "8", "1", "2", "3", "4")


def transform_style(name: str, others: list[str]) -> dict[str, object]:
    """Figure 4+'s style of transform ``name``: its own in :data:`TRANSFORM_STYLE`, else one
    by its place in ``others`` (the drawn transforms without one, sorted), so that every
    registered transform is drawn."""
    if name in TRANSFORM_STYLE:
        return TRANSFORM_STYLE[name]
    i = others.index(name)
    colour = mpl.colormaps["tab20b"](i % 20)
    return {"color": colour, "marker": _OTHER_MARKERS[i % len(_OTHER_MARKERS)], "ls": "-."}
