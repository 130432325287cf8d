"""Student-t quantiles written out by hand, for the statistics tests of compare.py and the study."""
import math

# Two-sided 95% Student-t quantiles in closed form: 1 degree of freedom (Cauchy) tan(pi (p - 1/2)); 2 degrees
# 0.95 * sqrt(2 / (4 p (1 - p))), with p = 0.975.
T1, T2 = math.tan(math.pi * 0.475), 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
