"""Critical-token rendering (terminal, HTML), statistics by token class, and the `cft.annotation_cli` commands."""

from __future__ import annotations

import json

from rich.console import Console

from cft.annotation_cli import main
from cft.data.annotation_format import critical_stats, token_class, tokens_of, write_part
from cft.viz import render_html, render_terminal


def _row(i: int) -> dict:
    # "12 + 7 = 19\n#### 19" cut into tokens; the digits of the results are critical.
    pieces = ["1", "2", " +", " ", "7", " =", " ", "1", "9", "\n", "####", " ", "1", "9", " <b>"]
    crit = [0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    offsets = [0]
    for p in pieces:
        offsets.append(offsets[-1] + len(p))
    return {
        "id": f"q{i}", "question": "Compute 12 + 7.", "answer": "19", "response": "".join(pieces),
        "response_token_offsets": offsets, "critical": crit, "n_scored": 14, "entropy": [0.5] * 15,
        "alternatives": [[3, 4]] * 14 + [[]], "rollouts_failed": [2 * c for c in crit], "rollouts_total": [2] * 14 + [0],
    }  # fmt: skip


def test_token_classes():
    assert [token_class(t) for t in ["7", " 12", "3.5", " +", "=", "(", " apples", "\n", "####", "x2", ""]] == [
        "digits", "digits", "digits", "operators", "operators", "operators", "words", "whitespace", "punctuation",
        "mixed", "whitespace",
    ]  # fmt: skip


def test_critical_stats_by_class():
    stats = critical_stats([_row(0), _row(1)])
    # The 15th token (" <b>") comes after the answer and was never scored: it is in no denominator.
    assert stats["tokens"] == 28 and stats["critical"] == 6 and stats["critical_fraction"] == 6 / 28
    assert stats["by_class"]["mixed"]["tokens"] == 0 and stats["by_class"]["punctuation"]["tokens"] == 2
    digits, ops = stats["by_class"]["digits"], stats["by_class"]["operators"]
    assert digits["tokens"] == 14 and digits["critical"] == 4 and digits["share_of_critical"] == 4 / 6
    assert ops["critical"] == 2 and ops["critical_fraction"] == 2 / 4
    assert tokens_of(_row(0))[2] == " +"


def test_render_terminal_and_html(tmp_path):
    console = Console(record=True, width=100, force_terminal=False)
    render_terminal([_row(0)], console=console)
    text = console.export_text()
    assert "12 + 7 = 19" in text and "critical tokens: 3/14" in text and "digits" in text
    path = render_html([_row(0), _row(1)], tmp_path / "crit.html", limit=1, title="demo")
    page = path.read_text()
    assert page.count("class='tok crit'") == 3 and page.count("class='tok unscored'") == 1
    assert "&lt;b&gt;" in page and "<b>" not in page.split("</style>")[1]
    assert "failed 2/2 rollouts" in page


def test_annotations_commands(tmp_path, capsys):
    rows = [_row(i) for i in range(3)]
    write_part(
        tmp_path / "part-00000.parquet", rows, {"asked": ["q0", "q1", "q2", "q3"], "skipped": {"q3": "incorrect"}}
    )
    assert main(["stats", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["tokens"]
    assert stats["critical"] == 9 and stats["rows"] == 3
    assert main(["show", str(tmp_path), "-n", "1", "--html", str(tmp_path / "show.html")]) == 0
    assert (tmp_path / "show.html").is_file()
    assert main(["merge", str(tmp_path)]) == 2  # no shards to merge: a clear error, exit code 2
    assert "no shard-" in capsys.readouterr().err
