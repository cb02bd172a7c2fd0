"""Seeing critical tokens: annotated responses with critical tokens highlighted (HTML file or terminal), and
statistics of the critical fraction overall and by token class (digits, operators, words, other)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cft.data.annotation_format import critical_stats, tokens_of

__all__ = ["render_html", "render_terminal", "stats_table"]


def _tooltip(row: dict[str, Any], k: int, decode: Any = None) -> str:
    parts = []
    if row.get("entropy"):
        parts.append(f"entropy {row['entropy'][k]:.2f}")
    if row.get("rollouts_total") and row["rollouts_total"][k]:
        parts.append(f"failed {row['rollouts_failed'][k]}/{row['rollouts_total'][k]} rollouts")
    alts = (row.get("alternatives") or [None] * (k + 1))[k]
    if alts:
        shown = [repr(decode([a])) if decode else str(a) for a in alts]
        parts.append("alternatives " + ", ".join(shown))
    if k >= row.get("n_scored", k + 1):
        parts.append("not scored (after the final answer)")
    return "; ".join(parts)


def stats_table(stats: dict[str, Any]):
    """A rich Table of `critical_stats` output."""
    from rich.table import Table

    table = Table(title=f"critical tokens: {stats['critical']}/{stats['tokens']} ({stats['critical_fraction']:.1%})")
    entropy = all("mean_entropy" in c for c in stats["by_class"].values())
    cols = ("class", "tokens", "critical", "critical fraction", "share of critical") + (("mean entropy",) * entropy)
    for col in cols:
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, c in stats["by_class"].items():
        cells = [
            name,
            str(c["tokens"]),
            str(c["critical"]),
            f"{c['critical_fraction']:.1%}",
            f"{c['share_of_critical']:.1%}",
        ]
        table.add_row(*cells, *([f"{c['mean_entropy']:.3f}"] if entropy else []))
    return table


def render_terminal(rows: Sequence[dict[str, Any]], console: Any = None, limit: int = 5, stats: bool = True) -> None:
    """Print up to `limit` responses with critical tokens in reverse red, then the statistics of all `rows`."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console()
    for row in rows[:limit]:
        console.rule(f"[bold]{row['id']}[/bold]  answer {row['answer']}")
        console.print(Text(row.get("question", ""), style="dim"))
        text = Text()
        for tok, crit in zip(tokens_of(row), row["critical"]):
            text.append(tok, style="bold white on red" if crit else None)
        console.print(text)
    if stats:
        console.print(stats_table(critical_stats(rows)))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
.resp { font-family: ui-monospace, monospace; white-space: pre-wrap; background: #f7f7f7; padding: .6em;
        border-radius: 4px; line-height: 1.6; }
.tok:hover { outline: 1px solid #888; }
.crit { background: #e53935; color: white; border-radius: 2px; }
.unscored { color: #aaa; }
.q { color: #555; } table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; }
"""


def render_html(
    rows: Sequence[dict[str, Any]], path: str | Path, limit: int = 100, tokenizer: Any = None, title: str = ""
) -> Path:
    """Write a standalone HTML page: statistics, then up to `limit` responses with critical tokens highlighted
    (hover a token for its entropy, rollout failures and alternatives, decoded when `tokenizer` is given)."""
    stats = critical_stats(rows)
    decode = (lambda ids: tokenizer.decode(ids)) if tokenizer is not None else None
    out = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title or 'critical tokens')}</title>",
        f"<style>{_CSS}</style><h1>{html.escape(title or 'Critical tokens')}</h1>",
        f"<p>{stats['rows']} responses, {stats['critical']}/{stats['tokens']} tokens critical "
        f"({stats['critical_fraction']:.1%}).</p><table><tr><th>class</th><th>tokens</th><th>critical</th>"
        "<th>critical fraction</th><th>share of critical</th></tr>",
    ]
    for name, c in stats["by_class"].items():
        out.append(
            f"<tr><td>{name}</td><td>{c['tokens']}</td><td>{c['critical']}</td>"
            f"<td>{c['critical_fraction']:.1%}</td><td>{c['share_of_critical']:.1%}</td></tr>"
        )
    out.append("</table>")
    for row in rows[:limit]:
        out.append(f"<h3>{html.escape(str(row['id']))} — answer {html.escape(str(row['answer']))}</h3>")
        out.append(f"<p class='q'>{html.escape(row.get('question', ''))}</p><div class='resp'>")
        for k, (tok, crit) in enumerate(zip(tokens_of(row), row["critical"])):
            cls = "tok crit" if crit else ("tok unscored" if k >= row.get("n_scored", k + 1) else "tok")
            out.append(
                f"<span class='{cls}' title='{html.escape(_tooltip(row, k, decode), quote=True)}'>"
                f"{html.escape(tok)}</span>"
            )
        out.append("</div>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out) + "\n")
    return path
