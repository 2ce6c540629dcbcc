"""The promotion gate: a challenger replaces the champion only if it is clearly better.

Clearly better: the target metric (NDCG@10) beats the champion's by at least ``margin``
(relative), and no guard metric regresses beyond its tolerance. Both are measured on the
same split, which the caller guarantees by evaluating both models there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.config import GateSettings


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str]


def decide(challenger: dict[str, float], champion: dict[str, float] | None, cfg: GateSettings) -> Decision:
    """Whether ``challenger`` (metrics on the split) should replace ``champion``'s.

    With no champion the first model is promoted. A metric the challenger lacks fails the
    gate: an unmeasured guard is not a passed guard.
    """
    if champion is None:
        return Decision(True, ["no champion yet"])
    reasons, promote = [], True
    for name in [cfg.metric, *cfg.guards]:
        if name not in challenger:
            return Decision(False, [f"challenger has no {name}"])
    new, old = challenger[cfg.metric], champion.get(cfg.metric, float("-inf"))
    needed = old * (1 + cfg.margin)
    if new >= needed:
        reasons.append(f"{cfg.metric} {new:.4f} >= {needed:.4f} (champion {old:.4f} + {cfg.margin:.0%})")
    else:
        promote = False
        reasons.append(f"{cfg.metric} {new:.4f} < {needed:.4f} (champion {old:.4f} + {cfg.margin:.0%})")
    for name, guard in cfg.guards.items():
        if name not in champion:
            continue  # nothing to regress from
        value, base = challenger[name], champion[name]
        limit = base * (1 - guard.tolerance) if guard.higher_is_better else base * (1 + guard.tolerance)
        worse = value < limit if guard.higher_is_better else value > limit
        if worse:
            promote = False
            reasons.append(f"guard {name} regressed: {value:.4f} vs champion {base:.4f} (tolerance {guard.tolerance:.0%})")
    return Decision(promote, reasons)
