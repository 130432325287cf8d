"""The report's numbers as text: one formatter per kind of number, used by every section and by the figures' labels,
so a number reads the same wherever it appears.

Two styles of plain numbers: `fixed` (a set number of decimals, no thousands separator: prose, the study's and the
2019 models' tables, figure labels) and `number` (the results tables' cells: ints with commas, floats with commas
and 4 decimals, 1 from 100 up). Each has a "± spread" form; differences are `signed`, intervals `span`.
"""

DASH = "–"  # a number that is missing


def fixed(value, decimals=4):
    """'1.2346': `decimals` places, no thousands separator; DASH for None."""
    return DASH if value is None else f"{value:.{decimals}f}"


def fixed_pm(value, spread, decimals=4):
    """'1.6000 ± 0.1414' (a mean and its sd or SE); fixed(value) alone when spread is None, DASH when value is."""
    if value is None:
        return DASH
    return fixed(value, decimals) + ("" if spread is None else f" ± {fixed(spread, decimals)}")


def signed(value, decimals=4):
    """'+0.0123', '-0.0352': a difference, its sign always shown."""
    return f"{value:+.{decimals}f}"


def span(interval, decimals=4):
    """'[-0.0623, -0.0081]': an interval (low, high) of differences."""
    low, high = interval
    return f"[{signed(low, decimals)}, {signed(high, decimals)}]"


def interval(result, decimals, bold=True):
    """'-0.0352 [-0.0623, -0.0081]' of a compare.seed_difference result, in bold when the interval excludes 0;
    '+0.0100 (one seed)' without an interval; DASH without a difference."""
    if result is None or result["mean"] is None:
        return DASH
    text = signed(result["mean"], decimals)
    if result["interval"] is None:
        return text + " (one seed)"
    text += f" {span(result['interval'], decimals)}"
    return f"**{text}**" if bold and result["verdict"] != "no detectable difference" else text


def count(n):
    """'2,048': a count with thousands separators."""
    return f"{n:,}"


def plural(n, noun):
    """'1 run', '3 runs'."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def percent(share):
    """'42%' of 0.42."""
    return f"{share:.0%}"


def number(value, decimals=None):
    """A table cell's number: ints with commas; floats with commas and `decimals` places (None: 4 for
    bpd-sized values, 1 from 100 up); DASH for None; anything else as text, its '|' escaped for Markdown."""
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if isinstance(value, int):
        return count(value)
    return f"{value:,.{decimals if decimals is not None else 1 if abs(value) >= 100 else 4}f}"


def number_pm(value, spread, decimals=None):
    """'1.2400 ± 0.0046' in number's style; number(value) alone when spread is None."""
    return number(value, decimals) if spread is None else f"{number(value, decimals)} ± {number(spread, decimals)}"


def seconds(value):
    """'7.25 s' below 10 s, '42.5 s' below 2 min, '3.1 min' from there; number(value) when it is no number."""
    if not isinstance(value, (int, float)):
        return number(value)
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def table(header, rows, rule=" --- "):
    """A Markdown table of text cells; `rule` is each column's cell in the line under the header."""
    lines = ["| " + " | ".join(header) + " |", "|" + f"{rule}|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
