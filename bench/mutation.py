"""Mutation scores per core module, from mutmut's results, into ``MUTATION.md``.

``make mutate`` runs ``mutmut run`` (configured in ``pyproject.toml``: the modules whose
bugs cost traffic, against the fast tests) and then this module, which reads
``mutmut results --all true`` and writes the score of each module (killed or timed out /
all mutants), the goal (85 %), and the surviving mutants, with the reasons of those
listed as equivalent in ``bench/mutation_equivalent.txt`` (``NAME: reason`` per line).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "bench" / "mutation_equivalent.txt"
GOAL = 0.85
_LINE = re.compile(r"^\s*(?P<name>(?P<module>[\w.]+?)\.x\S*__mutmut_\d+): (?P<status>.+)$")
KILLED = {"killed", "timeout"}
UNSCORED = {"not checked", "equivalent"}  # not run yet (an interrupted run), or equivalent


def results(mutmut: str) -> list[tuple[str, str, str]]:
    out = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    rows = []
    for line in out.splitlines():
        match = _LINE.match(line)
        if match:
            rows.append((match["module"], match["name"], match["status"].strip()))
    return rows


def equivalents() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    out = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def source_digest(module: str) -> str:
    path = ROOT / (module.replace(".", "/") + ".py")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def report(rows: list[tuple[str, str, str]], equivalent: dict[str, str],
           previous: dict[str, dict] | None = None) -> tuple[str, dict]:
    """MUTATION.md's text and the summary per module. A module this run did not check at
    all keeps its row from ``previous`` (an earlier run's summary), marked with that run's
    date, and as stale when its source has changed since."""
    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors: dict[str, list[str]] = collections.defaultdict(list)
    for module, name, status in rows:
        if status not in KILLED and name in equivalent:
            status = "equivalent"
        by_module[module][status] += 1
        if status not in KILLED and status not in UNSCORED:
            survivors[module].append(f"{name} ({status})")
    summary = {}
    lines = [
        "# Mutation testing", "",
        "`make mutate` (mutmut 3, configured in `pyproject.toml`) mutates the modules whose "
        "bugs cost traffic and runs the fast tests (`-m 'not integration'`) against each "
        f"mutant. Score = (killed + timed out) / (mutants checked - equivalent); mutants "
        f"not checked (an interrupted run) are shown, not scored. Goal: {GOAL:.0%} per "
        f"module. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; a module "
        "this run did not check keeps the figures of the run that did (its surviving mutants "
        "are listed in that run's MUTATION.md, in git history).",
        "", "| module | mutants | checked | killed | survived | no tests | equivalent | score "
        "| goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for module, counts in sorted(by_module.items()):
        total = sum(counts.values())
        killed = sum(counts[s] for s in KILLED)
        checked = total - counts["not checked"]
        earlier = (previous or {}).get(module)
        ran = checked - counts["equivalent"]  # mutants this run actually tried
        if ran == 0 and earlier and earlier.get("checked"):
            summary[module] = earlier
            when = earlier.get("measured_at", "an earlier run")
            stale = earlier.get("source_digest") != source_digest(module)
            score = earlier["score"]
            partial = earlier["checked"] < earlier["mutants"]
            done = "partial" if partial or score is None else (
                "met" if score >= GOAL else "missed")
            verdict = (f"{done}, run of {when}"
                       + ("; **stale**: the source changed since" if stale else ""))
            lines.append(f"| `{module}` | {earlier['mutants']} | {earlier['checked']} | "
                         f"{earlier['killed']} | {earlier.get('survived', 0)} | "
                         f"{earlier.get('no tests', 0)} | {earlier.get('equivalent', 0)} | "
                         f"{'-' if score is None else f'{score:.1%}'} | {verdict} |")
            continue
        scored = checked - counts["equivalent"]
        score = killed / scored if scored else float("nan")
        summary[module] = {"mutants": total, "checked": checked, "killed": killed,
                           "score": round(score, 4) if scored else None,
                           **{k: v for k, v in counts.items() if k not in KILLED},
                           "measured_at": now, "source_digest": source_digest(module)}
        # A partial run is no verdict: the unchecked mutants may be the ones that survive.
        verdict = "not run" if not scored else (
            f"partial ({checked}/{total} checked)" if checked < total
            else ("met" if score >= GOAL else "missed"))
        shown = f"{score:.1%}" if scored else "-"
        lines.append(f"| `{module}` | {total} | {checked} | {killed} | {counts['survived']} "
                     f"| {counts['no tests']} | {counts['equivalent']} | {shown} | {verdict} |")
    lines += ["", "## Equivalent mutants (not counted)", ""]
    lines += [f"- `{name}`: {reason}" for name, reason in sorted(equivalent.items())] or ["none"]
    lines += ["", "## Surviving mutants", "",
              "Inspect one with `.venv/bin/mutmut show NAME`.", ""]
    for module, names in sorted(survivors.items()):
        lines.append(f"<details><summary>{module}: {len(names)}</summary>\n")
        lines += [f"- `{n}`" for n in names]
        lines.append("\n</details>\n")
    return "\n".join(lines) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    parser.add_argument("--out", type=Path, default=ROOT / "MUTATION.md")
    args = parser.parse_args(argv)
    rows = results(args.mutmut)
    if not rows:
        print("no mutmut results: run `make mutate` first", file=sys.stderr)
        return 1
    raw = ROOT / "bench" / "out" / "mutation.json"
    previous = json.loads(raw.read_text()) if raw.exists() else {}
    text, summary = report(rows, equivalents(), previous)
    args.out.write_text(text)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(summary, indent=2))
    for module, data in sorted(summary.items()):
        score = "-" if data["score"] is None else f"{data['score']:.1%}"
        print(f"{module:32s} {data['killed']:>5}/{data['checked']:<5} {score}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
