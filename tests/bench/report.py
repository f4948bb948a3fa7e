"""Medians and tables. Everything printed is also kept, in order, in REPORT
so that --json and --markdown can write it out."""

import statistics

REPORT = {"sections": [], "targets": []}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def section(title):
    print(f"\n## {title}\n", flush=True)
    REPORT["sections"].append({"title": title, "items": []})


def note(text):
    print(text, flush=True)
    if REPORT["sections"]:
        REPORT["sections"][-1]["items"].append({"note": text})


def skipped(why):
    note(f"skipped: {why}")


def table(columns, rows):
    """Print a markdown table; rows are lists of already formatted cells."""
    widths = [max(len(str(c)) for c in col) for col in
              zip(columns, *rows)] if rows else [len(c) for c in columns]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                 for i, (c, w) in
                                 enumerate(zip(cells, widths))) + " |"

    print(line(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)
    if REPORT["sections"]:
        REPORT["sections"][-1]["items"].append(
            {"columns": list(columns), "rows": [list(r) for r in rows]})


def verdict(value, target, higher_is_better=True, label=None, unit=""):
    """"met" / "missed" against a target, "-" without a figure. With a
    label, the figure also goes into the summary that targets() prints."""
    if value is None:
        result = "-"
    else:
        ok = value >= target if higher_is_better else value <= target
        result = "met" if ok else "missed"
    if label:
        shown = "-" if value is None else f"{value:.2f}".rstrip("0") \
            .rstrip(".")
        REPORT["targets"].append(
            [label, shown + unit,
             f"{'>=' if higher_is_better else '<='} {target}{unit}", result])
    return result


def targets():
    """The summary of every figure that has a target."""
    if not REPORT["targets"]:
        return
    section("Targets")
    table(["figure", "measured", "target", "result"], REPORT["targets"])


def markdown():
    """REPORT as Markdown: for docs/bench.md's "Latest results"."""
    out = [f"Run of {REPORT.get('date')}: {REPORT.get('header', '')}", ""]
    for sec in REPORT["sections"]:
        out += [f"### {sec['title']}", ""]
        for item in sec["items"]:
            if "note" in item:
                text = item["note"].strip()
                if text:
                    out += [text, ""]
                continue
            cols, rows = item["columns"], item["rows"]
            out.append("| " + " | ".join(cols) + " |")
            text_cols = [not any(ch.isdigit() for ch in str(rows[0][i]))
                         if rows else True for i in range(len(cols))]
            out.append("|" + "|".join("---" if t else "---:"
                                      for t in text_cols) + "|")
            out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            out.append("")
    return "\n".join(out)
