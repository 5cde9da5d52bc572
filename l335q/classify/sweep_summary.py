"""Words for a learning-rate / batch-size sweep, computed from its result rows (never typed in).

A row is one (model, lr, batch_size) cell of a ``cls-sweep`` submission: the means and sds over seeds, and
``per_seed``: a list of ``{seed, train_acc, test_acc, diverged, seconds_per_epoch, train_curve, test_curve}``
(accuracies as fractions; curves one value per epoch). ``summarise(rows)`` finds every sweep in the rows
(an axis with several values while the other axes stay fixed), says which settings failed to learn,
learned slowly, over-fitted more and what small batches cost in time, and re-tests each claim the
practical report makes about these sweeps, seed by seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

AXES = ("model", "lr", "batch_size")
CHANCE = 0.10            # ten balanced classes
NEAR_CHANCE = 0.10       # test accuracy <= CHANCE + NEAR_CHANCE (20 %) counts as "failed to learn"
SLOW_MARGIN = 0.03       # a learning setting this far (or more) below the best setting's test accuracy is "slow"
SIMILAR_GAP = 0.01       # |train - test| within this counts as "train and test about equal"
GAP_SPREAD = 0.005       # gaps closer than this are "about the same over-fitting"
MUCH_LONGER = 2.0        # "much longer per epoch": at least this ratio, smallest batch vs largest
ABOUT = 0.02             # "reaches about X": test accuracy >= X - ABOUT
STILL_RISING = 0.005     # "not converged": train accuracy rose at least this much over the last epochs
LAST_EPOCHS = 3
REPORT_LR_1E3_TEST = 0.89   # the practical report: lr=1e-3 "reaching a test accuracy of 89%" (one run)
PRACTICAL_FIXED = {"lr": {"batch_size": 64}, "batch_size": {"lr": 1e-3}}   # where the practical ran each sweep


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def points(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} points"


def n_seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def label(axis: str, value) -> str:
    if axis == "lr":
        return f"lr={value:g}"
    return f"batch {value}" if axis == "batch_size" else str(value)


def failed(row: dict) -> bool:
    """Diverged in every seed (no seed left to average), or a mean test accuracy near chance."""
    return row["seeds"] == 0 or row["test_acc_mean"] is None or row["test_acc_mean"] <= CHANCE + NEAR_CHANCE


def seed_failed(s: dict) -> bool:
    return bool(s["diverged"]) or s["test_acc"] is None or s["test_acc"] <= CHANCE + NEAR_CHANCE


def seed_gap(s: dict) -> float | None:
    if s["train_acc"] is None or s["test_acc"] is None:
        return None
    return s["train_acc"] - s["test_acc"]


# ----------------------------------------------------------------------------- finding the sweeps

@dataclass
class Sweep:
    axis: str
    fixed: dict             # the other axes' values
    rows: list[dict]        # sorted by the swept value

    @property
    def name(self) -> str:
        what = {"lr": "learning-rate sweep", "batch_size": "batch-size sweep"}[self.axis]
        return f"{what} ({', '.join(label(a, v) for a, v in self.fixed.items())})"

    def at(self, value) -> dict | None:
        return next((r for r in self.rows if math.isclose(r[self.axis], value, rel_tol=1e-9)), None)


def find_sweeps(rows: list[dict]) -> list[Sweep]:
    sweeps = []
    for axis in ("lr", "batch_size"):
        others = [a for a in AXES if a != axis]
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault(tuple(r[a] for a in others), []).append(r)
        for key, group in groups.items():
            if len({r[axis] for r in group}) > 1:
                sweeps.append(Sweep(axis, dict(zip(others, key)), sorted(group, key=lambda r: r[axis])))
    return sweeps


# ----------------------------------------------------------------------------- general findings

def findings(sw: Sweep) -> list[str]:
    lab = lambda r: label(sw.axis, r[sw.axis])
    out = []
    bad = [r for r in sw.rows if failed(r)]
    learned = [r for r in sw.rows if not failed(r)]
    for r in bad:
        why = [f"test {pct(r['test_acc_mean'])} ± {points(r['test_acc_sd'])} over {n_seeds(r['seeds'])}, "
               f"chance is {pct(CHANCE)}"] if r["seeds"] else []
        why += [f"diverged in {r['diverged']} of {n_seeds(r['seeds'] + r['diverged'])}"] if r["diverged"] else []
        out.append(f"{sw.name}: {lab(r)} failed to learn ({'; '.join(why)}).")
    if not learned:
        out.append(f"{sw.name}: no setting learned (every one within {points(NEAR_CHANCE)} of chance or diverged).")
        return out
    best = max(learned, key=lambda r: r["test_acc_mean"])
    out.append(f"{sw.name}: best test accuracy {pct(best['test_acc_mean'])} ± {points(best['test_acc_sd'])} "
               f"at {lab(best)} ({n_seeds(best['seeds'])}).")
    for r in learned:
        if r["test_acc_mean"] < best["test_acc_mean"] - SLOW_MARGIN:
            reach = lambda x: f"epoch {x['epochs_to_85']}" if x["epochs_to_85"] else "never"
            when = f"; 85 % test reached {reach(r)} (vs {reach(best)})" if best["epochs_to_85"] else ""
            out.append(f"{sw.name}: {lab(r)} learned slowly: test {pct(r['test_acc_mean'])} at the end against "
                       f"{pct(best['test_acc_mean'])} for {lab(best)}{when}.")
        if r["diverged"]:
            out.append(f"{sw.name}: {lab(r)} diverged in {r['diverged']} of {n_seeds(r['seeds'] + r['diverged'])} "
                       f"(its accuracies are over the other {r['seeds']}).")
    if len(learned) > 1:
        by_gap = sorted(learned, key=lambda r: r["gap"])
        lo, hi = by_gap[0], by_gap[-1]
        if hi["gap"] - lo["gap"] < GAP_SPREAD:
            out.append(f"{sw.name}: over-fitting about the same in every learning setting "
                       f"(train−test gap {points(lo['gap'])} to {points(hi['gap'])}).")
        else:
            out.append(f"{sw.name}: {lab(hi)} over-fitted most (train−test gap {points(hi['gap'])}), "
                       f"{lab(lo)} least ({points(lo['gap'])}).")
    if sw.axis == "batch_size":
        small, large = sw.rows[0], sw.rows[-1]
        if small["seconds_per_epoch"] and large["seconds_per_epoch"]:
            ratio = small["seconds_per_epoch"] / large["seconds_per_epoch"]
            out.append(f"{sw.name}: an epoch at {lab(small)} took {small['seconds_per_epoch']:.2f} s, "
                       f"{ratio:.1f}× the {large['seconds_per_epoch']:.2f} s at {lab(large)}.")
    return out


# ----------------------------------------------------------------------------- the practical's claims

@dataclass
class Claim:
    axis: str
    text: str                       # what the practical report says, in short
    values: tuple                   # the axis values the claim is about (all must be in the sweep)
    holds: Callable[..., bool]      # per seed: holds(seed_dict_at_values[0], seed_dict_at_values[1], ...)
    show: Callable[..., str] = lambda *s: pct(s[0]["test_acc"])


def _rising(s: dict) -> bool:
    c = [v for v in (s.get("train_curve") or []) if v is not None]
    return len(c) > LAST_EPOCHS and c[-1] - c[-1 - LAST_EPOCHS] >= STILL_RISING


def _gap_str(*ss) -> str:
    return " vs ".join(points(seed_gap(s)) for s in ss)


def _test_str(*ss) -> str:
    return " vs ".join(pct(s["test_acc"]) for s in ss)


CLAIMS = [
    Claim("lr", "lr=0.1 fails to learn at all (random predictions)", (0.1,), seed_failed,
          lambda s: "diverged" if s["diverged"] else pct(s["test_acc"])),
    Claim("lr", "lr=1e-5 learns, but slowly (well below lr=1e-3)", (1e-5, 1e-3),
          lambda a, b: not seed_failed(a) and not seed_failed(b) and a["test_acc"] < b["test_acc"] - SLOW_MARGIN,
          _test_str),
    Claim("lr", "lr=1e-5: train and test accuracy about equal", (1e-5,),
          lambda s: seed_gap(s) is not None and abs(seed_gap(s)) <= SIMILAR_GAP, lambda s: "gap " + _gap_str(s)),
    Claim("lr", "lr=1e-3 learns, reaching a test accuracy of about 89 %", (1e-3,),
          lambda s: not seed_failed(s) and s["test_acc"] >= REPORT_LR_1E3_TEST - ABOUT),
    Claim("batch_size", "batch 4 gives slightly better test accuracy than batch 64", (4, 64),
          lambda a, b: None not in (a["test_acc"], b["test_acc"]) and a["test_acc"] > b["test_acc"], _test_str),
    Claim("batch_size", "batch 4 over-fits more than batch 64", (4, 64),
          lambda a, b: None not in (seed_gap(a), seed_gap(b)) and seed_gap(a) > seed_gap(b),
          lambda a, b: "gap " + _gap_str(a, b)),
    Claim("batch_size", "batch 512 gives lower accuracy than batch 64", (512, 64),
          lambda a, b: None not in (a["test_acc"], b["test_acc"]) and a["test_acc"] < b["test_acc"], _test_str),
    Claim("batch_size", "batch 512 over-fits less than batch 64", (512, 64),
          lambda a, b: None not in (seed_gap(a), seed_gap(b)) and seed_gap(a) < seed_gap(b),
          lambda a, b: "gap " + _gap_str(a, b)),
    Claim("batch_size", f"batch 512 has not converged by the last epoch (train accuracy still rising "
                        f">= {100 * STILL_RISING:g} points over the last {LAST_EPOCHS} epochs)", (512,), _rising,
          lambda s: pct(s["train_acc"])),
]


def _seconds_claim(sw: Sweep) -> list[str]:
    """'Smaller batches take much longer per epoch': per seed, time falls as the batch grows, by MUCH_LONGER+."""
    per = [{s["seed"]: s for s in r["per_seed"]} for r in sw.rows]
    seeds = sorted(set.intersection(*[set(p) for p in per]))
    if not seeds:
        return []
    ok, shown = 0, []
    for seed in seeds:
        t = [p[seed]["seconds_per_epoch"] for p in per]
        if None not in t and all(a > b for a, b in zip(t, t[1:])) and t[0] >= MUCH_LONGER * t[-1]:
            ok += 1
        shown.append(f"seed {seed}: " + " / ".join("–" if v is None else f"{v:.2f} s" for v in t))
    text = (f"smaller batches take much longer per epoch (at least {MUCH_LONGER:g}× "
            f"{label('batch_size', sw.rows[0]['batch_size'])} vs {label('batch_size', sw.rows[-1]['batch_size'])})")
    return [_verdict(sw, text, ok, len(seeds), " (" + "; ".join(shown) + ")")]


def _verdict(sw: Sweep, text: str, ok: int, n: int, detail: str) -> str:
    word = "held" if ok == n else ("did not hold" if ok == 0 else "held only partly")
    return f"{sw.name}: practical's claim \"{text}\" — {word}: {ok}/{n_seeds(n)}{detail}."


def claim_checks(sw: Sweep) -> list[str]:
    """The practical's claims about this sweep, re-tested seed by seed, where the sweep is the practical's
    (learning rates at batch 64, batch sizes at lr 1e-3); other sweeps of a grid make no such claim."""
    if any(not math.isclose(sw.fixed[k], v) for k, v in PRACTICAL_FIXED[sw.axis].items()):
        return []
    out = _seconds_claim(sw) if sw.axis == "batch_size" else []
    for c in CLAIMS:
        if c.axis != sw.axis:
            continue
        cells = [sw.at(v) for v in c.values]
        if None in cells:
            continue
        per = [{s["seed"]: s for s in r["per_seed"]} for r in cells]
        seeds = sorted(set.intersection(*[set(p) for p in per]))
        if not seeds:
            continue
        ok = sum(bool(c.holds(*[p[seed] for p in per])) for seed in seeds)
        detail = " (" + "; ".join(f"seed {seed}: {c.show(*[p[seed] for p in per])}" for seed in seeds) + ")"
        out.append(_verdict(sw, c.text, ok, len(seeds), detail))
    return out


def summarise(rows: list[dict]) -> list[str]:
    sweeps = find_sweeps(rows)
    if not sweeps:
        return ["one setting only: nothing swept, no comparison to make."] if rows else []
    out = []
    for sw in sweeps:
        out += findings(sw) + claim_checks(sw)
    return out
