"""report/make_figures.py, the CLI: what it refuses before any section runs (one line, exit status 2, nothing
written). The sections: test_results_2021.py, test_study.py, test_vae_gan_realnvp.py; bad run folders:
tests/test_bad_inputs_runs.py."""
import pytest

import make_figures


@pytest.mark.parametrize("argv, message", [
    ([], "give a RUN_DIR, a --study SWEEP_DIR, --models_2019 DIR --compare DIR DIR, or several"),
    (["--models_2019", "models"], "--models_2019 and --compare go together (the section holds both)"),
    (["run", "--compare", "flows", "vaes"], "--models_2019 and --compare go together (the section holds both)"),
], ids=["no-input", "models_2019-without-compare", "compare-without-models_2019"])
def test_refused_before_any_section(argv, message, tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("<!-- results:begin -->\n<!-- results:end -->\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli([*argv, "--out_dir", str(tmp_path / "out"), "--report", str(report)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"make_figures.py: error: {message}"
    assert not (tmp_path / "out").exists() and report.read_text() == "<!-- results:begin -->\n<!-- results:end -->\n"
