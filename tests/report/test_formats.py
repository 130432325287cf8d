"""report/formats.py, the one set of number formatters of every section, against strings written out by hand."""
from formats import (DASH, count, fixed, fixed_pm, interval, number, number_pm, percent, plural, seconds, signed,
                     span, table)


def test_fixed_has_set_decimals_and_no_thousands_separator():
    assert fixed(1.234567) == "1.2346"
    assert fixed(0.98765, 3) == "0.988"
    assert fixed(1234.5, 2) == "1234.50"
    assert fixed(12, 1) == "12.0"  # an int gets its decimals too
    assert fixed(7.6, 0) == "8"
    assert fixed(None) == DASH == "–"


def test_fixed_pm():
    assert fixed_pm(1.6, 0.141421) == "1.6000 ± 0.1414"
    assert fixed_pm(31.0, 1.41421, 2) == "31.00 ± 1.41"
    assert fixed_pm(20, None, 1) == "20.0"  # one seed: no spread
    assert fixed_pm(None, 0.1) == "–"


def test_signed_and_span():
    assert signed(0.0123) == "+0.0123"
    assert signed(-0.0352) == "-0.0352"
    assert signed(0.0) == "+0.0000"
    assert signed(12.0, 2) == "+12.00"
    assert span((-0.0623, -0.0081)) == "[-0.0623, -0.0081]"
    assert span((-1.5, 2.25), 2) == "[-1.50, +2.25]"


def test_interval_of_a_seed_difference():
    lower = {"mean": -0.0352, "interval": (-0.0623, -0.0081), "verdict": "lower"}
    assert interval(lower, 4) == "**-0.0352 [-0.0623, -0.0081]**"  # the interval excludes 0: bold
    assert interval(lower, 4, bold=False) == "-0.0352 [-0.0623, -0.0081]"
    assert interval({"mean": 12.0, "interval": (10.5, 13.5), "verdict": "higher"}, 2) == "**+12.00 [+10.50, +13.50]**"
    unsure = {"mean": -0.1333, "interval": (-0.98, 0.71), "verdict": "no detectable difference"}
    assert interval(unsure, 4) == "-0.1333 [-0.9800, +0.7100]"
    assert interval({"mean": 0.01, "interval": None, "verdict": "no detectable difference"}, 4) == "+0.0100 (one seed)"
    assert interval({"mean": None, "interval": None, "verdict": "no detectable difference"}, 4) == "–"
    assert interval(None, 4) == "–"


def test_counts():
    assert count(2048) == "2,048"
    assert count(60000) == "60,000"
    assert count(7) == "7"
    assert plural(1, "run") == "1 run"
    assert plural(3, "run") == "3 runs"
    assert plural(0, "epoch") == "0 epochs"
    assert plural(2, "torch thread") == "2 torch threads"
    assert percent(0.42) == "42%"
    assert percent(0.126) == "13%"
    assert percent(1.0) == "100%"
    assert percent(0.95) == "95%"


def test_number_is_a_table_cell():
    assert number(None) == "–"
    assert number(2048) == "2,048"  # ints as counts
    assert number(1.234567) == "1.2346"  # bpd-sized: 4 decimals
    assert number(99.99999) == "100.0000"  # below 100 before rounding: still 4
    assert number(654.321) == "654.3"  # from 100 up: 1 decimal
    assert number(-150.0) == "-150.0"
    assert number(1234.5678) == "1,234.6"  # floats get thousands separators too
    assert number(654.321, 2) == "654.32"
    assert number(True) == "True"
    assert number("cpu") == "cpu"
    assert number("a|b") == "a\\|b"  # a Markdown cell's separator escaped


def test_number_pm():
    assert number_pm(1.23999, 0.00456) == "1.2400 ± 0.0046"
    assert number_pm(672.5, 2.5, 2) == "672.50 ± 2.50"
    assert number_pm(1.5, None) == "1.5000"
    assert number_pm(None, 0.1) == "– ± 0.1000"


def test_seconds():
    assert seconds(7.25) == "7.25 s"
    assert seconds(9.999) == "10.00 s"
    assert seconds(42.54) == "42.5 s"
    assert seconds(119.94) == "119.9 s"
    assert seconds(120) == "2.0 min"
    assert seconds(185.0) == "3.1 min"
    assert seconds(None) == "–"
    assert seconds("?") == "?"


def test_table():
    assert table(["a", "b"], [["1", "2"], ["3", "4"]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |"
    assert table(["seed", "difference"], [["42", "+0.0100"]], rule="---") == (
        "| seed | difference |\n|---|---|\n| 42 | +0.0100 |")
    assert table(["only"], []) == "| only |\n| --- |"
