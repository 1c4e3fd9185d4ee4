"""Confidence intervals of success rates: one definition for every report (closed loop, the expert's recordings,
the ablation tables).

Wilson score interval (95%): with n episodes and k successes it is centred at (k + z^2/2) / (n + z^2), stays
inside [0, 1] and is sensible at 0% and 100% (its ends there are exactly 0 and 1).
"""

import math

Z95 = 1.959964


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
  """(low, high) of the success rate successes / n; (0, 1) for n = 0. `successes` may be fractional (rows
  pooled with equal weight: tools/paper_orderings.pool)."""
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 past the rate
  high = 1.0 if successes == n else min(1.0, centre + half)
  return low, high
