"""Tables for papers: CSV, Markdown and LaTeX renderings of the statistics, one number format."""
from __future__ import annotations

import csv
import io
import math


def count(x: float) -> str:
    """Labeled videos per class: whole when every class got the same number, else the mean."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def pct(x: float) -> str:
    """An accuracy (a fraction) as a percentage with one decimal: the one format of every table."""
    return f"{100 * x:.1f}"


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def results_cells(row: dict) -> list[str]:
    return [row["protocol"], row["init"], row["rule"], count(row['labeled_per_class']), str(row["n"]),
            f"{pct(row['mean'])} ± {pct(row['std'])}", f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}]",
            row.get("splits", "?"), row.get("subsets", "?"), row.get("seeds", "?")]


def variance_cells(row: dict) -> list[str]:
    """A row of the variance-sources table: shares of the total in %, and the total's std."""
    head = [row["protocol"], row["init"], row["rule"], count(row["labeled_per_class"]), str(row["runs"])]
    if not row["separable"]:
        return head + ["—"] * 5 + [pct(math.sqrt(row["total_var"]))]
    parts = [row["pretraining_var"], row["subset_var"], row["seed_var"], row["split_var"], row["residual_var"]]
    total = sum(v for v in parts if not math.isnan(v))
    return head + ["—" if math.isnan(v) else f"{100 * v / total:.0f}" if total > 0 else "0" for v in parts] + [
        pct(math.sqrt(total))]


def paired_cells(row: dict) -> list[str]:
    """A paired-difference row; its protocol cell names another treated init than `pretrained` (a
    snapshot `selected` on validation) and another baseline than `random`."""
    baseline, treated = row.get("baseline", "random"), row.get("treated_init", "pretrained")
    protocol = row["protocol"] + ("" if treated == "pretrained" else f", {treated}") + \
        ("" if baseline == "random" else f" vs {baseline}")
    return [protocol, row["rule"], count(row['labeled_per_class']), str(row["pairs"]),
            pct(row["treated_mean"]), pct(row["baseline_mean"]), f"{pct(row['diff_mean'])}",
            f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}]", f"{row['relative_gain']:.2f}"]


RESULTS_HEAD = ["protocol", "init", "labels", "labeled/class", "n", "acc % (mean ± std)", "95% CI",
                "splits", "subsets", "seeds"]
VARIANCE_HEAD = ["protocol", "init", "labels", "labeled/class", "runs", "pretraining run %", "subset draw %",
                 "training seed %", "split %", "rest %", "std (points)"]
PAIRED_HEAD = ["protocol", "labels", "labeled/class", "pairs", "pretrained %", "random %",
               "Δ %", "95% CI of Δ", "ratio"]


def to_markdown(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def to_latex(head: list[str], body: list[list[str]], caption: str, align: str | None = None) -> str:
    """A booktabs table; `align` the column spec (default: three text columns, the rest numbers)."""
    special = {"\\": r"\textbackslash{}", "%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$",
               "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}", "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---"}

    def esc(text: str) -> str:
        return "".join(special.get(ch, ch) for ch in text)
    align = align or "l" * 3 + "r" * (len(head) - 3)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}",
             r"\toprule", " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
