"""Under-, well- or over-fitted: a verdict read off a model's mean accuracy curves.

The rules, in order (thresholds are the named constants below; accuracies are fractions):
  1. failed to learn   final train accuracy below CHANCE + NEAR_CHANCE (10 classes: chance is 0.10);
  2. over-fitted       final train − test gap above GAP_OVERFIT, or test accuracy falling by more than
                       TREND_FLAT per epoch over the last TREND_EPOCHS epochs while train accuracy rises;
  3. under-fitted      final train accuracy below TRAIN_UNDERFIT, or test accuracy still rising by more than
                       TREND_RISING per epoch over the last TREND_EPOCHS epochs (training stopped too early);
  4. well-fitted       otherwise.
Every sentence of the verdict carries the numbers it rests on, so different curves give different words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CHANCE = 0.10            # 10 balanced classes
NEAR_CHANCE = 0.05       # train accuracy within this of chance: nothing learned
GAP_OVERFIT = 0.03       # final train − test accuracy above this: over-fitted
TRAIN_UNDERFIT = 0.90    # final train accuracy below this: the model does not fit even its training data
TREND_EPOCHS = 3         # the trend is the mean change per epoch over this many last epochs
TREND_RISING = 0.003     # test accuracy still rising faster than this per epoch: not converged
TREND_FLAT = 0.002       # test accuracy falling faster than this per epoch: memorising the training set

CAUSES = {
    "failed to learn": ["the learning rate is far too large (updates overshoot) or far too small (nothing moves)",
                        "the loss diverged or the network's units died (ReLU outputs stuck at zero)"],
    "over-fitted": ["many parameters relative to the number of training images: the network memorises them",
                    "too little regularisation (dropout, weight decay, data augmentation)",
                    "training continues past the epoch where test accuracy peaks"],
    "under-fitted": ["too few epochs, or a learning rate too small for the epochs given",
                     "too little capacity, or an architecture that cannot use the images' local structure"],
    "well-fitted": ["capacity, regularisation and training length are in balance for this data"],
}
REMEDIES = {
    "failed to learn": ["search the learning rate over decades (e.g. 1e-2 … 1e-4 for Adam)",
                        "check the inputs are scaled to [0, 1] and the loss is finite"],
    "over-fitted": ["stop early at the best test (better: validation) epoch",
                    "add dropout or weight decay, or augment the images (small shifts, flips)",
                    "use fewer parameters, or more training data"],
    "under-fitted": ["train for more epochs or raise the learning rate",
                     "add capacity (channels, width) or use convolutions"],
    "well-fitted": ["keep the setting; to gain more, add capacity together with regularisation"],
}


@dataclass
class Diagnosis:
    verdict: str                  # failed to learn | over-fitted | under-fitted | well-fitted
    train_acc: float
    test_acc: float
    gap: float
    test_trend: float             # mean change of test accuracy per epoch over the last TREND_EPOCHS epochs
    train_trend: float
    reasons: list[str] = field(default_factory=list)

    @property
    def causes(self) -> list[str]:
        return CAUSES[self.verdict]

    @property
    def remedies(self) -> list[str]:
        return REMEDIES[self.verdict]

    def sentence(self, name: str = "the model") -> str:
        return (f"{name}: {self.verdict} — " + "; ".join(self.reasons) + ". Likely causes: "
                + "; ".join(self.causes) + ". Remedies: " + "; ".join(self.remedies) + ".")


def trend(curve: list[float], epochs: int = TREND_EPOCHS) -> float:
    """Mean change per epoch over the last ``epochs`` epochs (0 for a curve of one point)."""
    tail = curve[-(epochs + 1):]
    return (tail[-1] - tail[0]) / (len(tail) - 1) if len(tail) > 1 else 0.0


def pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def diagnose(train: list[float], test: list[float]) -> Diagnosis:
    """Verdict from the per-epoch mean train and test accuracies (same length, at least one epoch)."""
    if not train or len(train) != len(test):
        raise ValueError("diagnose needs train and test accuracy curves of the same, non-zero length")
    tr, te = train[-1], test[-1]
    d = Diagnosis("well-fitted", tr, te, tr - te, trend(test), trend(train))
    n = min(TREND_EPOCHS, len(test) - 1)
    trend_txt = f"test accuracy {d.test_trend * 100:+.2f} points per epoch over the last {n} epoch{'s' * (n != 1)}"
    if tr < CHANCE + NEAR_CHANCE:
        d.verdict = "failed to learn"
        d.reasons.append(f"final train accuracy {tr:.1%} is within {pts(NEAR_CHANCE)} of chance ({CHANCE:.0%})")
        return d
    if d.gap > GAP_OVERFIT:
        d.verdict = "over-fitted"
        d.reasons.append(f"train−test gap {pts(d.gap)} > {pts(GAP_OVERFIT)}")
    if n >= 1 and d.test_trend < -TREND_FLAT and d.train_trend > 0:
        d.verdict = "over-fitted"
        d.reasons.append(f"{trend_txt} (falling faster than {pts(TREND_FLAT)}) while train accuracy rises")
    if d.verdict == "over-fitted":
        if tr < TRAIN_UNDERFIT:
            d.reasons.append(f"train accuracy is only {tr:.1%} (< {TRAIN_UNDERFIT:.0%}): it is also not converged")
        return d
    if tr < TRAIN_UNDERFIT:
        d.verdict = "under-fitted"
        d.reasons.append(f"final train accuracy {tr:.1%} < {TRAIN_UNDERFIT:.0%}")
    if n >= 1 and d.test_trend > TREND_RISING:
        d.verdict = "under-fitted"
        d.reasons.append(f"{trend_txt} (still rising faster than {pts(TREND_RISING)}: not converged)")
    if d.verdict == "under-fitted":
        return d
    d.reasons.append(f"train−test gap {pts(d.gap)} ≤ {pts(GAP_OVERFIT)}, train accuracy {tr:.1%} ≥ "
                     f"{TRAIN_UNDERFIT:.0%}, {trend_txt} (between −{pts(TREND_FLAT)} and +{pts(TREND_RISING)})")
    return d
