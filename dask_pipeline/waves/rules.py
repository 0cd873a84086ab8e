"""Elliott hard rules as masks, written once against the array module ``xp`` (numpy or cupy).

Prices are *signed*: ``q = p`` for a bullish pattern and ``q = -p`` for a bearish one, so
one set of inequalities serves both directions (negation is exact). ``q`` has shape
``(..., 6)``: the start of wave 1 and the ends of waves 1-5. Every rule mask is True
where the rule holds. Comparisons are strict: touching a boundary breaks the rule.
"""

from __future__ import annotations

from typing import Any

#: Impulse rules, in the order ``reference.broken_impulse_rules`` reports them.
IMPULSE_RULES = ("alternation", "wave2_retrace", "wave3_shortest", "wave4_overlap", "progress")

#: Rules of an ABC correction following an impulse.
CORRECTION_RULES = ("alternation", "b_within", "c_beyond_a", "above_start")


def impulse_rule_masks(xp: Any, q: Any) -> dict[str, Any]:
    """Each impulse rule as a boolean mask over the leading axes of ``q`` (``(..., 6)``).

    - ``alternation``: each wave moves its own way (1, 3, 5 up; 2, 4 down).
    - ``wave2_retrace``: wave 2 ends above the start of wave 1.
    - ``wave3_shortest``: wave 3 is not the shortest of waves 1, 3, 5.
    - ``wave4_overlap``: wave 4 ends above the end of wave 1 (no overlap).
    - ``progress``: waves 3 and 5 end beyond the ends of waves 1 and 3.
    """
    q0, q1, q2, q3, q4, q5 = (q[..., i] for i in range(6))
    len1 = q1 - q0
    len3 = q3 - q2
    len5 = q5 - q4
    return {
        "alternation": (q1 > q0) & (q2 < q1) & (q3 > q2) & (q4 < q3) & (q5 > q4),
        "wave2_retrace": q2 > q0,
        "wave3_shortest": ~((len3 < len1) & (len3 < len5)),
        "wave4_overlap": q4 > q1,
        "progress": (q3 > q1) & (q5 > q3),
    }


def impulse_valid(xp: Any, q: Any) -> Any:
    """True where every impulse rule holds."""
    masks = impulse_rule_masks(xp, q)
    valid = masks[IMPULSE_RULES[0]]
    for name in IMPULSE_RULES[1:]:
        valid = valid & masks[name]
    return valid


def correction_rule_masks(xp: Any, q0: Any, q5: Any, qa: Any, qb: Any, qc: Any) -> dict[str, Any]:
    """Rules of an A-B-C correction after an impulse from ``q0`` to ``q5`` (signed prices).

    - ``alternation``: A moves against the impulse, B with it, C against it.
    - ``b_within``: B ends below the end of the impulse.
    - ``c_beyond_a``: C ends beyond the end of A.
    - ``above_start``: C ends above the start of the impulse.
    """
    return {
        "alternation": (qa < q5) & (qb > qa) & (qc < qb),
        "b_within": qb < q5,
        "c_beyond_a": qc < qa,
        "above_start": qc > q0,
    }


def correction_valid(xp: Any, q0: Any, q5: Any, qa: Any, qb: Any, qc: Any) -> Any:
    """True where every correction rule holds."""
    masks = correction_rule_masks(xp, q0, q5, qa, qb, qc)
    valid = masks[CORRECTION_RULES[0]]
    for name in CORRECTION_RULES[1:]:
        valid = valid & masks[name]
    return valid
