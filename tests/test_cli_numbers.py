"""Numbers on the command line: nan, inf, zero or a negative count, a share outside 0..1, a port
outside 1..65535, a seed no library takes. Each is one line naming the option, exit 2, and no
work: every case below also names a file that does not exist, so an option checked only after the
command started would show that file's error instead (and `tailor serve --batch-size 0`, unchecked,
loaded a model and hung its generation)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tailor.cli import main

GONE = "/nonexistent/tailor-numbers"

# (command line, the start of the one line after "error: ")
CASES = [
    (["serve", "--base", GONE, "--batch-size", "0"], "--batch-size 0: expected at least 1"),
    (["serve", "--base", GONE, "--port", "0"], "--port 0: expected at least 1"),
    (["serve", "--base", GONE, "--port", "70000"], "--port 70000: expected at most 65535"),
    (["serve", "--base", GONE, "--max-tokens", "-5"], "--max-tokens -5: expected at least 1"),
    (["serve", "--base", GONE, "--max-queue", "0"], "--max-queue 0: expected at least 1"),
    (["predict", GONE, "--input", GONE, "--output", "/tmp/x", "--batch-size", "-1"], "--batch-size -1: expected at least 1"),
    (["predict", GONE, "--input", GONE, "--output", "/tmp/x", "--processes", "0"], "--processes 0: expected at least 1"),
    (["predict", GONE, "--input", GONE, "--output", "/tmp/x", "--max-new-tokens", "0"],
     "--max-new-tokens 0: expected at least 1"),
    (["train", GONE, "--processes", "-2"], "--processes -2: expected at least 1"),
    (["inspect-prompt", GONE, "--top", "0"], "--top 0: expected at least 1"),
    (["export", GONE, "--serve", "vllm", "--port", "99999"], "--port 99999: expected at most 65535"),
    (["export", GONE, "--gguf", "/tmp/x.gguf", "--check", "-1"], "--check -1: expected at least 0"),
    (["eval", "--task", GONE, "--seed", "-1"], "--seed -1: expected at least 0"),
    (["eval", "--task", GONE, "--seed", str(10**30)], f"--seed {10**30}: expected at most 4294967295"),
    (["eval", "--task", GONE, "--limit", "0"], "--limit 0: expected at least 1"),
    (["eval", "--task", GONE, "--batch-size", "0"], "--batch-size 0: expected at least 1"),
    (["eval", "--task", GONE, "--latency-requests", "-1"], "--latency-requests -1: expected at least 0"),
    (["bench", "--model", GONE, "--size", "0"], "--size 0: expected at least 1"),
    (["check", GONE, "--test", "nan"], "--test nan: expected a finite number"),
    (["check", GONE, "--dev", "inf"], "--dev inf: expected a finite number"),
    (["check", GONE, "--test", "-0.1"], "--test -0.1: expected at least 0"),
    (["check", GONE, "--test", "2.5"], "--test 2.5: expected a share below 1"),
    (["curate", GONE, "--near-threshold", "0"], "--near-threshold 0.0: expected more than 0"),
    (["curate", GONE, "--noise-confidence", "nan"], "--noise-confidence nan: expected a finite number"),
    (["curate", GONE, "--max-leakage", "-1"], "--max-leakage -1.0: expected at least 0"),
    (["curate", GONE, "--sample", "-3"], "--sample -3: expected at least 0"),
    (["curate", GONE, "--max-tokens", "0"], "--max-tokens 0: expected at least 1"),
    (["debug", GONE, "--near", "inf"], "--near inf: expected a finite number"),
    (["debug", GONE, "--gap", "2"], "--gap 2.0: expected at most 1"),
    (["index", GONE, "--out", "/tmp/kb", "--chunk-tokens", "0"], "--chunk-tokens 0: expected at least 1"),
    (["index", GONE, "--out", "/tmp/kb", "--overlap-tokens", "-1"], "--overlap-tokens -1: expected at least 0"),
    (["label", GONE, "--with", GONE, "--out", "/tmp/r.jsonl", "--keep-above", "1.5"], "--keep-above 1.5: expected at most 1"),
    (["label", "--accept", GONE, "--into", "/tmp/t.jsonl", "--threshold", "nan"], "--threshold nan: expected a finite number"),
    (["tune", GONE, "--arm", "a", "--worker", "0"], "--worker 0: expected at least 1"),
    (["tune", GONE, "--arm", "a", "--threads", "0"], "--threads 0: expected at least 1"),
    (["run", GONE + ".yaml", "--limit", "0"], "--limit 0: expected at least 1 test row"),
    (["demo", "--limit", "-1"], "--limit -1: expected at least 1 test row"),
    (["run", GONE + ".yaml", "--budget", "9" * 400], "--budget '999"),   # float('9' * 400) is inf
]


def run_main(args, capsys, monkeypatch) -> tuple[int, str]:
    """The CLI entry point (`tailor.cli.main`, as the console script runs it), in this process."""
    monkeypatch.setattr(sys, "argv", ["tailor", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_a_bad_number_is_one_line_naming_the_option_before_any_work(args, message, capsys, monkeypatch):
    code, err = run_main(args, capsys, monkeypatch)
    assert code == 2, err
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_console_script_prints_the_same_line(tmp_path):
    tailor = str(__import__("pathlib").Path(sys.executable).with_name("tailor"))
    r = subprocess.run([tailor, "serve", "--base", GONE, "--batch-size", "0"], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stderr) == (2, "error: --batch-size 0: expected at least 1\n")


def test_numbers_in_range_pass_through(capsys, monkeypatch):
    """The check refuses only what is out of range: a share of 0.2 and a count of 30 rows reach the
    command, which then reports the missing file."""
    code, err = run_main(["check", GONE, "--test", "0.2", "--dev", "30", "--seed", "4294967295"], capsys, monkeypatch)
    assert code == 2 and GONE in err and "--" not in err.split(GONE)[0], err


def test_an_app_run_without_main_gets_the_same_line_and_code():
    """typer's CliRunner (or a program embedding the app) does not pass through `tailor.cli.main`."""
    from typer.testing import CliRunner

    from tailor.cli import app
    r = CliRunner().invoke(app, ["predict", GONE, "--input", GONE, "--output", "/tmp/x", "--processes", "nan"])
    assert r.exit_code == 2   # not a number at all: typer's own usage error
    r = CliRunner().invoke(app, ["label", GONE, "--with", GONE, "--out", "/tmp/r.jsonl", "--keep-above", "-0.5"])
    assert (r.exit_code, r.output) == (2, "error: --keep-above -0.5: expected at least 0\n")


def test_two_adapters_under_one_name_are_refused_before_the_base_loads(capsys, monkeypatch):
    """The second NAME=ARM replaced the first without a word."""
    code, err = run_main(["serve", "--base", GONE, "--adapter", "a=x", "--adapter", "a=y"], capsys, monkeypatch)
    assert (code, err) == (2, "error: --adapter 'a=y': the model name 'a' is given twice\n")


@pytest.mark.parametrize("args,option", [
    (["serve", "--base", GONE, "--batch-size", "nan"], "--batch-size"),
    (["predict", GONE, "--input", GONE, "--output", "/tmp/x", "--processes", "inf"], "--processes"),
    (["eval", "--task", GONE, "--seed", "1e3"], "--seed"),
])
def test_a_count_that_is_not_a_whole_number_is_one_line_too(args, option, capsys, monkeypatch):
    """click's usage errors (a value its type refuses) were a boxed usage text of several lines."""
    code, err = run_main(args, capsys, monkeypatch)
    assert code == 2 and err.startswith(f"error: Invalid value for '{option}': ") and err.count("\n") == 1, err


def test_other_usage_errors_are_one_line_and_the_bare_command_still_shows_the_help(capsys, monkeypatch):
    assert run_main(["serve", "--bogus"], capsys, monkeypatch)[1].startswith("error: No such option: --bogus")
    assert run_main(["check"], capsys, monkeypatch) == (2, "error: Missing argument 'file'.\n")
    tailor = str(__import__("pathlib").Path(sys.executable).with_name("tailor"))
    bare = subprocess.run([tailor], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "Usage: tailor" in bare.stdout + bare.stderr
