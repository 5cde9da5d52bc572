"""Words computed from numbers: do design choices hold across inputs (images, resolutions)?

``consistency(rows, config_keys, input_keys)`` reads result rows (one per configuration and input with a
``psnr_mean``) and says which configuration is best overall, on how many inputs it is best, how well
the rankings of configurations agree between inputs (Spearman's ρ, across images at one resolution and
across resolutions of one image), and which level of each design choice wins on how many inputs.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

from ..results import mean


def training_text(spec: dict) -> str:
    """The fixed training settings of a field submission, for a table's note: '300 steps, depth 3, ...'."""
    return (f"{spec.get('steps')} steps, depth {spec.get('depth')}, width {spec.get('width')}, "
            f"{spec.get('optimizer')} lr {spec.get('lr')}")


def precision_note(spec: dict) -> list[str]:
    """A table's note when the submission trained with a bfloat16 forward (``precision: bf16``), else none."""
    if spec.get("precision") != "bf16":
        return []
    return ["precision bf16: trained with a bfloat16 forward; its numbers are close to, not the same as, an fp32 run's"]


def describe(config: tuple, keys: list[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(keys, config))


def ranks(values: list[float]) -> list[float]:
    """Rank 1 = largest; ties share their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); None when a side is constant or n < 3."""
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = mean(ra), mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def agreement(rho: float) -> str:
    return ("agree strongly" if rho >= 0.8 else "agree moderately" if rho >= 0.5 else
            "agree weakly" if rho >= 0.2 else "do not agree")


def _pairs_rho(table: dict, configs: list, pairs) -> list[float]:
    out = []
    for a, b in pairs:
        shared = [c for c in configs if c in table[a] and c in table[b]]
        rho = spearman([table[a][c] for c in shared], [table[b][c] for c in shared])
        if rho is not None:
            out.append(rho)
    return out


def consistency(rows: list[dict], config_keys: list[str], input_keys: list[str], value: str = "psnr_mean") -> list[str]:
    table: dict[tuple, dict[tuple, float]] = defaultdict(dict)     # input -> config -> value
    for r in rows:
        if r.get(value) is not None:
            table[tuple(r[k] for k in input_keys)][tuple(r[k] for k in config_keys)] = r[value]
    inputs = sorted(table, key=lambda t: tuple(map(str, t)))
    configs = sorted({c for t in table.values() for c in t}, key=lambda t: tuple(map(str, t)))
    if len(configs) < 2 or not inputs:
        return ["fewer than two configurations with results: nothing to compare"]
    name_in = lambda inp: " @ ".join(map(str, inp))
    mean_rank = {c: mean([ranks(list(table[i].values()))[list(table[i]).index(c)] for i in inputs if c in table[i]])
                 for c in configs}
    overall = min(configs, key=lambda c: mean_rank[c])
    wins = [i for i in inputs if max(table[i], key=table[i].get) == overall]
    out = [f"best configuration overall (mean rank {mean_rank[overall]:.1f} of {len(configs)} over {len(inputs)} "
           f"inputs): {describe(overall, config_keys)}; it is best on {len(wins)} of {len(inputs)} inputs"]
    for i in inputs:
        best = max(table[i], key=table[i].get)
        if best != overall and overall in table[i]:
            out.append(f"on {name_in(i)} the best is {describe(best, config_keys)} ({table[i][best]:.2f} dB, "
                       f"{table[i][best] - table[i][overall]:.2f} dB above the overall best)")
    if len(inputs) < 2:
        return out + ["one input only: consistency across images and resolutions cannot be judged"]
    for label, axis in (("images at the same resolution", 0), ("resolutions of the same image", 1)):
        if len(input_keys) < 2:
            pairs = list(itertools.combinations(inputs, 2)) if axis == 0 else []
        else:
            pairs = [(a, b) for a, b in itertools.combinations(inputs, 2) if a[1 - axis] == b[1 - axis]]
        rhos = _pairs_rho(table, configs, pairs)
        if rhos:
            out.append(f"rankings of configurations between {label} {agreement(mean(rhos))}: mean Spearman ρ "
                       f"{mean(rhos):.2f} (min {min(rhos):.2f}, {len(rhos)} pairs)")
    for k, key in enumerate(config_keys):
        levels = sorted({c[k] for c in configs}, key=str)
        if len(levels) < 2:
            continue
        winners = defaultdict(list)
        for i in inputs:
            marginal = {lv: mean([v for c, v in table[i].items() if c[k] == lv]) for lv in levels}
            marginal = {lv: m for lv, m in marginal.items() if m is not None}
            if marginal:
                winners[max(marginal, key=marginal.get)].append(i)
        ordered = sorted(winners, key=lambda lv: -len(winners[lv]))
        verdict = "consistent" if len(ordered) == 1 else "not consistent"
        out.append(f"{key} (averaged over the other choices): " + ", ".join(
            f"{lv} wins on {len(winners[lv])}" for lv in ordered) + f" of {len(inputs)} inputs — {verdict}")
    return out
