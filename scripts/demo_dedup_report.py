#!/usr/bin/env python3
"""The number side of scripts/demo_dedup.sh: reads the `vrift ingest --json` summaries and
`vrift status --json` of one run, checks that they agree, and prints the scenario tables
(or, with --json, one JSON object). Standard library only.

    demo_dedup_report.py scenario --scenario NAME --status STATUS.json --out ROWS.json
        [--color 0|1] [--quiet 0|1] --row PROJECT TREE INGEST.json ...
    demo_dedup_report.py missing --status STATUS.json --projects DIR NAME...
    demo_dedup_report.py combine --demo-dir D --store S --vrift V --status STATUS.json ROWS.json...

Exit status 1 (with the reasons on stderr) when the two sources disagree, an ingest had
errors, or a re-run stored new blobs.
"""

import argparse
import json
import os
import sys


def thousands(n):
    return f"{int(round(n)):,}"


def human_bytes(n):
    """Decimal units, as `vrift status` prints them ("1.48 GB", "222 MB")."""
    units = ["B", "KB", "MB", "GB", "TB", "PB"]
    v = float(n)
    u = 0
    while v >= 1000.0 and u < len(units) - 1:
        v /= 1000.0
        u += 1
    if u == 0:
        return f"{int(n)} B"
    return f"{v:.0f} {units[u]}" if v >= 100.0 else f"{v:.2f} {units[u]}"


def percent(x):
    """0.9996 must not read as 100%: only exact 0 and 1 print without a decimal."""
    if x is None:
        return "—"
    if x >= 1.0:
        return "100%"
    if x <= 0.0:
        return "0%"
    return f"{min(max(x * 100.0, 0.1), 99.9):.1f}%"


def ratio(a, b):
    return a / b if b else None


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        sys.exit(f"demo_dedup: error: cannot read {what} {path}: {e}")
    # vrift prints exactly one JSON object; take the last line that parses, to be lenient
    # about anything printed before it.
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            return json.loads(line)
        except ValueError:
            continue
    sys.exit(f"demo_dedup: error: no JSON object in {what} {path}")


def real(p):
    return os.path.realpath(p)


def projects_by_source(status):
    return {real(p["source"]): (i, p) for i, p in enumerate(status.get("projects", []))}


def cmd_scenario(a):
    status = load_json(a.status, "vrift status --json output")
    by_source = projects_by_source(status)
    problems = []
    rows = []
    for project, tree, ingest_path in a.row:
        ing = load_json(ingest_path, f"vrift ingest --json output of {project}")
        entry = by_source.get(real(tree))
        if entry is None:
            problems.append(f"{project}: `vrift status` lists no project for {tree}")
            continue
        position, st = entry
        if st.get("unreadable"):
            problems.append(f"{project}: status cannot read its manifest: {st['unreadable']}")
            continue
        if st.get("name") != project:
            problems.append(f"{project}: status names the project at {tree} {st.get('name')!r}")

        def same(what, from_ingest, from_status):
            if from_ingest != from_status:
                problems.append(
                    f"{project}: {what}: vrift ingest --json says {from_ingest}, "
                    f"vrift status --json says {from_status}"
                )

        if ing.get("errors", 0) != 0:
            problems.append(f"{project}: the ingest reported {ing['errors']} errors")
        same("files", ing["files"], st["files"])
        same("bytes", ing["bytes"], st["apparent_bytes"])
        # Status counts a blob as shared when a project registered earlier references it,
        # so blobs - shared_blobs are the contents this project brought: its new blobs.
        same("new blobs (status: blobs - shared_blobs)", ing["blobs_new"], st["blobs"] - st["shared_blobs"])
        files = ing["files"]
        new = ing["blobs_new"]
        saved = st["apparent_bytes"] - st["added_bytes"]
        rows.append(
            {
                "dataset": project,
                "project": st["name"],
                "registry_position": position,
                "source": st["source"],
                "files": files,
                "bytes": ing["bytes"],
                "blobs": st["blobs"],
                "shared_blobs": st["shared_blobs"],
                "new_blobs": new,
                "dedup_hits": ing["dedup_hits"],
                "skipped": ing["skipped"],
                "excluded": ing["excluded"],
                "dedup_rate": ratio(files - new, files),
                "saved_bytes": saved,
                "saved_rate": ratio(saved, ing["bytes"]),
                "added_bytes": st["added_bytes"],
                "seconds": ing["seconds"],
                "files_per_sec": ing["files_per_sec"],
            }
        )
    if a.scenario == "rerun":
        for r in rows:
            if r["new_blobs"] != 0:
                problems.append(
                    f"{r['dataset']}: a re-run into the warm store stored {r['new_blobs']} new blobs "
                    f"(the fresh ingest should have left every content in the store)"
                )
    if problems:
        for p in problems:
            print(f"demo_dedup: mismatch: {p}", file=sys.stderr)
        return 1

    files = sum(r["files"] for r in rows)
    nbytes = sum(r["bytes"] for r in rows)
    new = sum(r["new_blobs"] for r in rows)
    saved = sum(r["saved_bytes"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    total = {
        "files": files,
        "bytes": nbytes,
        "new_blobs": new,
        "dedup_rate": ratio(files - new, files),
        "saved_bytes": saved,
        "saved_rate": ratio(saved, nbytes),
        "seconds": seconds,
        "files_per_sec": ratio(files, seconds) or 0.0,
    }
    result = {"scenario": a.scenario, "rows": rows, "total": total}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    if not a.quiet:
        print_table(result, a.color)
        print_provenance(a.row, status.get("store"))
    return 0


# Box drawing like `vrift status`.
def table(header, body, footer, right):
    widths = [max(len(str(r[i])) for r in [header] + body + footer) for i in range(len(header))]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            c = str(c)
            out.append(c.rjust(widths[i]) if right[i] else c.ljust(widths[i]))
        return "│ " + " │ ".join(out) + " │"

    def rule(l, m, r):
        return l + m.join("─" * (w + 2) for w in widths) + r

    lines = [rule("┌", "┬", "┐"), line(header), rule("├", "┼", "┤")]
    lines += [line(r) for r in body]
    if footer:
        lines.append(rule("├", "┼", "┤"))
        lines += [line(r) for r in footer]
    lines.append(rule("└", "┴", "┘"))
    return "\n".join("  " + s for s in lines)


def print_provenance(rows, store):
    """What the figures were measured on and how to measure one again: speed on a shared
    2-core machine moves with its load, so the load goes next to the numbers."""
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = "unknown"
    print(
        f"\n  Machine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min) when this "
        f"table was made."
    )
    if rows:
        project, tree, ingest_json = rows[0]
        manifest = os.path.join(os.path.dirname(os.path.dirname(tree)), f"{project}.manifest")
        print(
            f"  One row again: vrift --the-source-root {store} --json ingest {tree} -o {manifest} --name {project}"
            f"\n  (its summary as recorded: {ingest_json})"
        )


def print_table(result, color):
    header = ["Dataset", "Files", "Blobs", "New blobs", "Dedup", "Saved", "Files/s", "Time"]
    right = [False, True, True, True, True, True, True, True]
    body = []
    for r in result["rows"]:
        body.append(
            [
                r["dataset"],
                thousands(r["files"]),
                thousands(r["blobs"]),
                thousands(r["new_blobs"]),
                percent(r["dedup_rate"]),
                f"{human_bytes(r['saved_bytes'])} ({percent(r['saved_rate'])})",
                thousands(r["files_per_sec"]),
                f"{r['seconds']:.2f} s",
            ]
        )
    t = result["total"]
    footer = []
    if len(result["rows"]) > 1:
        footer.append(
            [
                "all",
                thousands(t["files"]),
                "",
                thousands(t["new_blobs"]),
                percent(t["dedup_rate"]),
                f"{human_bytes(t['saved_bytes'])} ({percent(t['saved_rate'])})",
                thousands(t["files_per_sec"]),
                f"{t['seconds']:.2f} s",
            ]
        )
    print(table(header, body, footer, right))
    rows = result["rows"]
    if result["scenario"] == "fresh" and len(rows) > 1:
        later = rows[1:]
        blobs = sum(r["blobs"] for r in later)
        shared = sum(r["shared_blobs"] for r in later)
        nbytes = sum(r["bytes"] for r in later)
        saved = sum(r["saved_bytes"] for r in later)
        print(
            f"\n  Cross-project: the trees after the first ({', '.join(r['dataset'] for r in later)}) found "
            f"{thousands(shared)} of their {thousands(blobs)} distinct contents ({percent(ratio(shared, blobs))}) "
            f"already stored;\n  {human_bytes(saved)} of their {human_bytes(nbytes)} "
            f"({percent(ratio(saved, nbytes))}) needed no new storage."
        )
    elif result["scenario"] == "rerun":
        ok = all(r["new_blobs"] == 0 for r in rows)
        mark = "\033[32m100%\033[0m" if color and ok else "100%"
        print(
            f"\n  Warm store: {mark} of {thousands(t['files'])} files were dedup hits, "
            f"{thousands(t['new_blobs'])} new blobs: {human_bytes(t['saved_bytes'])} ingested without storing a byte."
        )
    excluded = sum(r["excluded"] for r in rows)
    if excluded:
        print(
            f"\n  {thousands(excluded)} files were left out by vrift's security filter "
            f"(secrets such as .env*, *.pem); they are not counted above."
        )
    print(
        "\n  Dedup = files that cost no new blob / files; Saved = bytes that needed no new storage;"
        "\n  Files/s and Time are vrift's own (`vrift ingest --json`); every row matches `vrift status --json`."
    )


def cmd_missing(a):
    status = load_json(a.status, "vrift status --json output")
    by_source = projects_by_source(status)
    missing = []
    for name in a.names:
        e = by_source.get(real(os.path.join(a.projects, name, "node_modules")))
        if e is None or e[1].get("name") != name or e[1].get("unreadable"):
            missing.append(name)
    print(" ".join(missing))
    return 0


def cmd_combine(a):
    status = load_json(a.status, "vrift status --json output")
    scenarios = [load_json(p, "scenario rows") for p in a.rows]
    print(
        json.dumps(
            {
                "demo_dir": a.demo_dir,
                "store": a.store,
                "vrift": a.vrift,
                "scenarios": scenarios,
                "status": status,
            }
        )
    )
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenario")
    s.add_argument("--scenario", required=True, choices=["fresh", "rerun"])
    s.add_argument("--status", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--color", type=int, default=0)
    s.add_argument("--quiet", type=int, default=0)
    s.add_argument("--row", nargs=3, action="append", default=[], metavar=("PROJECT", "TREE", "INGEST_JSON"))
    m = sub.add_parser("missing")
    m.add_argument("--status", required=True)
    m.add_argument("--projects", required=True)
    m.add_argument("names", nargs="+")
    c = sub.add_parser("combine")
    c.add_argument("--demo-dir", required=True)
    c.add_argument("--store", required=True)
    c.add_argument("--vrift", required=True)
    c.add_argument("--status", required=True)
    c.add_argument("rows", nargs="+")
    a = ap.parse_args()
    return {"scenario": cmd_scenario, "missing": cmd_missing, "combine": cmd_combine}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
