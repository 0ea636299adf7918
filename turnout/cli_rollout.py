"""``turnout lint|plan|schema|apply|pause|resume|promote|abort|rollback|history`` and the
rollout part of ``turnout status``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from triton_slots.artifact import ArtifactError, artifact_signature
from triton_slots.registry import RegistryError
from triton_slots.signature import ModelSignature, SignatureError
from turnout.cli_common import client_for, context_named, dir_option, friendly, remote_client
from turnout.errors import StackError
from turnout.policy import SCHEMA_PATH, Policy, PolicyError, load_file
from turnout.policy.fit import fit_problems
from turnout.workflow import registry_for


def _load(path: Path) -> Policy:
    try:
        return load_file(path)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{path}: {len(exc.problems)} problem(s)") from exc


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def render_plan(policy: Policy) -> str:
    g = policy.gates
    lines = [f"rollout {policy.name}: {policy.model} onto the idle slot",
             "validation: " + _validation_line(policy),
             f"{'step':>4} {'weight':>7} {'bake':>6}  approval"]
    for index, step in enumerate(policy.steps, 1):
        lines.append(f"{index:>4} {step.weight:>6}% {_duration(step.bake_s):>6}  "
                     f"{'yes' if step.approval else '-'}")
    lines.append(f"gates every {_duration(g.interval_s)} over {_duration(g.window_s)} windows; "
                 f"minRequests {g.min_requests}; limits: failure {g.failure_limit}, "
                 f"inconclusive {g.inconclusive_limit}, consecutive errors "
                 f"{g.consecutive_error_limit}")
    for m in g.metrics:
        what = m.builtin or f"query {m.query!r}"
        lines.append(f"  {m.name:<16} {what:<18} from {m.source:<10} {m.thresholds()}"
                     + (f"  sequential (alpha {m.sequential[0]:g}, beta {m.sequential[1]:g})"
                        if m.sequential else "")
                     + ("  (dry run)" if m.dry_run else ""))
    rb = policy.rollback
    lines.append(f"rollback: {'automatic' if rb.automatic else 'manual'}; old slot kept warm "
                 f"{_duration(rb.keep_warm_s)} after promotion")
    approvals = sum(1 for s in policy.steps if s.approval)
    lines.append(f"minimum duration: {_duration(policy.minimum_duration_s())}"
                 + (f" plus {approvals} approval wait(s)" if approvals else "")
                 + " (plus deploy and validation); deadline "
                 + _duration(policy.progress_deadline_s))
    return "\n".join(lines)


def _validation_line(policy: Policy) -> str:
    v = policy.validation
    if not policy.validation_enabled:
        return "off (validation.enabled: false): nothing is validated before traffic"
    if not v.checks:
        return "none (checks: []): nothing is validated before traffic"
    checks = ", ".join(f"{c} (dry run)" if v.dry_run(c) else str(c) for c in v.checks)
    source = f"; requests from {v.samples}" if v.samples else "; random inputs from the " \
        "model's signature"
    return checks + source


def render_rollout(r: dict[str, Any]) -> list[str]:
    steps = r["steps"]
    lines = [f"rollout  {r['name']}: {r['model']} -> {r['candidate_slot']} "
             f"(stable {r['stable_slot']}: {r.get('stable_model') or '?'})"]
    where = ""
    if 0 <= r["step"] < len(steps):
        where = f"  step {r['step'] + 1}/{len(steps)} ({_step_label(steps[r['step']])})"
        if r["phase"] == "baking" and r.get("step_entered_at"):
            baked = r["now"] - r["step_entered_at"]
            bake = steps[r["step"]]["bake_s"]
            where += f"  bake {progress_bar(baked / bake if bake else 1.0)} " \
                     f"{min(baked, bake):.1f}s/{bake:g}s"
    lines.append(f"phase    {r['phase']}{where}")
    lines.append(f"reason   {r['reason']}")
    marks = []
    for index, step in enumerate(steps):
        done = index < r["step"] or r["phase"] == "promoted"
        current = index == r["step"] and r["phase"] not in ("promoted",)
        marks.append(f"[{_step_label(step, short=True)}"
                     f"{' ok' if done else (' ..' if current else '')}]")
    lines.append("steps    " + " ".join(marks))
    shadow = r.get("shadow")
    if shadow:
        rate = shadow["disagreement_rate"]
        worst = ", ".join(f"{name} {value:.4g}" for name, value in
                          sorted(shadow["worst_abs_diff"].items())) or "-"
        lines.append(f"shadow   {shadow['compared']} compared, {shadow['disagreed']} disagreed "
                     f"({'-' if rate is None else f'{rate:.2%}'}); worst abs diff {worst}; "
                     f"latency x{shadow['latency_ratio'] or '-'}; {shadow['refused']} refused, "
                     f"{shadow['timed_out']} unanswered, {shadow['truncated']} too large")
        for example in shadow["examples"][:3]:
            lines.append(f"  request {example['request']}: {example['why']}")
    latest = r.get("latest_round")
    if latest:
        lines.append(f"gates    round {len(r['rounds'])}: {latest['phase']} "
                     f"(window {latest['window_s']:.0f}s)")
        lines.append(f"  {'metric':<16} {'verdict':<12} {'value':>9}  {'threshold':<18} detail")
        for m in latest["measurements"]:
            value = "-" if m["value"] is None else f"{m['value']:.4g}"
            lines.append(f"  {m['metric']:<16} {m['phase']:<12} {value:>9}  "
                         f"{m.get('threshold') or '-':<18} {m['message']}"
                         + ("  (dry run)" if m["dry_run"] else ""))
    return lines


def _step_label(step: dict[str, Any], *, short: bool = False) -> str:
    if step.get("shadow"):
        return f"shadow {step['shadow']:g}%" if short else \
            f"shadow {step['shadow']:g}% of live requests, weight {step['weight']}%"
    return f"{step['weight']}" if short else f"{step['weight']}%"


def progress_bar(fraction: float, width: int = 20) -> str:
    done = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * done + "." * (width - done) + "]"


def render_history(entries: list[dict[str, Any]]) -> list[str]:
    """The audit log as a timeline: a line per day, a heading when a rollout's entries
    begin, and each entry with its time since that rollout started."""
    lines: list[str] = []
    day = None
    current = None
    started: dict[str, float] = {}
    for e in entries:
        stamp = time.localtime(e["at"])
        if time.strftime("%Y-%m-%d", stamp) != day:
            day = time.strftime("%Y-%m-%d", stamp)
            lines.append(f"== {day} ==")
        rollout = e.get("rollout")
        if rollout != current:
            current = rollout
            if rollout is not None:
                started.setdefault(rollout, e["at"])
                lines.append(f"-- rollout {rollout} --")
        at = time.strftime("%H:%M:%S", stamp) + f".{int(e['at'] * 10) % 10}"
        since = f"+{e['at'] - started[rollout]:6.1f}s" if rollout in started else " " * 8
        weights = e.get("weights") or {}
        split = f"b{weights.get('blue', '?')}/g{weights.get('green', '?')}" if weights else ""
        moved = f"{e.get('phase_from') or ''} -> {e['phase_to']}" if e.get("phase_to") \
            and e.get("phase_from") != e.get("phase_to") else ""
        lines.append(f"{at} {since} {e['actor']:<14} {e['kind']:<10} {split:<9} "
                     f"{moved:<26} {e['message']}".rstrip())
    return lines


def register(main: click.Group) -> None:
    @main.command()
    @dir_option
    @click.argument("file", type=click.Path(path_type=Path))
    @friendly
    def lint(directory: Path, file: Path) -> None:
        """Check a rollout policy: every problem with file, line and field; that the stack's
        registry holds its model version (listing those it does); and, where the registry is
        local, that its samples, inputs and outputs fit the model's signature. Says what it
        could not check."""
        policy = _load(file)
        signature, note = registry_check(directory, policy)
        if signature is not None:
            problems = fit_problems(policy, signature)
            for problem in problems:
                click.echo(problem, err=True)
            if problems:
                raise click.ClickException(f"{file}: {len(problems)} problem(s) with "
                                           f"{policy.model}'s signature")
        fitted = " (fits the registry's signature)" if signature is not None else \
            f"; {note}"
        click.echo(f"{file}: ok ({policy.model}, {len(policy.steps)} steps, minimum "
                   f"{_duration(policy.minimum_duration_s())}){fitted}")

    @main.command()
    @dir_option
    @click.argument("file", type=click.Path(path_type=Path))
    @friendly
    def plan(directory: Path, file: Path) -> None:
        """Print a policy's steps, gates and minimum duration, after the checks of
        `turnout lint` (the registry's version and signature where it can)."""
        policy = _load(file)
        signature, note = registry_check(directory, policy)
        click.echo(render_plan(policy))
        if signature is not None:
            problems = fit_problems(policy, signature)
            if problems:
                raise click.ClickException("; ".join(problems))
            click.echo(f"registry: {policy.model} found; the policy fits its signature")
        else:
            click.echo(f"registry: {note}")

    @main.command()
    @click.option("--path", "show_path", is_flag=True, help="Print the schema file's path.")
    def schema(show_path: bool) -> None:
        """Print the rollout policy JSON Schema (for editors)."""
        click.echo(str(SCHEMA_PATH) if show_path else SCHEMA_PATH.read_text())

    @main.command()
    @dir_option
    @click.argument("file", type=click.Path(path_type=Path))
    @click.option("--force", is_flag=True,
                  help="Deploy onto the warm standby, giving up its instant rollback "
                       "(recorded in the audit log).")
    @friendly
    def apply(directory: Path, file: Path, force: bool) -> None:
        """Start a rollout from a policy file. Refused while a rollout runs, or while the
        idle slot is the standby kept warm for an instant rollback (--force gives it up)."""
        _load(file)
        # The absolute path: the control plane resolves relative samples paths against it.
        described = client_for(directory).apply(file.read_text(), str(file.resolve()),
                                                force=force)
        click.echo(f"rollout {described['name']} started: {described['model']} -> "
                   f"{described['candidate_slot']} ({described['phase']})")
        click.echo("follow it with `turnout status --watch`")

    for name, help_text in (
        ("pause", "Hold the rollout at its current weight."),
        ("resume", "Continue a paused rollout (its bake restarts)."),
        ("abort", "Stop a running rollout: all traffic back to the stable slot; it ends "
                  "`aborted` (an operator's stop, not a verdict on the model). Not after "
                  "promotion."),
        ("rollback", "Take the new version's traffic back because it is bad: all traffic to "
                     "the stable slot; it ends `rolled_back`. Also after promotion, while the "
                     "old slot is kept warm."),
    ):
        main.command(name=name, help=help_text)(dir_option(friendly(_simple(name))))

    @main.command()
    @dir_option
    @click.option("--full", is_flag=True, help="Skip the remaining steps and gates: to the "
                  "last step now, approving (each in the audit log) the steps on the way.")
    @friendly
    def promote(directory: Path, full: bool) -> None:
        """One thing at a time: approve the step awaiting approval, or cut the current bake
        short (a next step that needs approval then waits for it). A paused rollout needs
        `turnout resume` first."""
        described = client_for(directory).command("promote", full=full)
        click.echo(f"{described['name']}: {described['phase']} - {described['reason']}")

    @main.command()
    @dir_option
    @click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
    @click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10_000),
                  help="The last N entries.")
    @click.option("--rollout", default=None,
                  help="Only this rollout: its id, or its name (every rollout of that name).")
    @friendly
    def history(directory: Path, as_json: bool, limit: int, rollout: str | None) -> None:
        """The audit log: every transition and weight change, who or what caused it."""
        entries = client_for(directory).history(rollout=rollout, limit=limit)
        if as_json:
            click.echo(json.dumps(entries, indent=2))
            return
        if not entries:
            click.echo("no audit entries yet" + (f" for rollout {rollout}" if rollout else ""))
        for line in render_history(entries):
            click.echo(line)


def registry_check(directory: Path, policy: Policy) -> tuple[ModelSignature | None, str]:
    """What the stack's registry says of the policy's model: its signature (None when it
    was not checked, with the note saying why). A version the registry does not hold is
    refused at once, listing those it does."""
    name, version = policy.model_ref
    where = "--context" if context_named() else str(directory)
    try:
        client = remote_client(directory)
        if client is not None:
            versions = [m["version"] for m in client.models() if m["name"] == name]
        else:
            registry = registry_for(directory)
            versions = [r.version for r in registry.list(name)]
    except StackError:
        return None, (f"model and signature not checked: no stack's registry in {directory} "
                      "(give --dir or --context)")
    if version not in versions:
        raise click.ClickException(
            f"{policy.source or 'policy'}: spec.model: {policy.model} is not in the registry "
            f"({where}); versions of {name} there: {', '.join(versions) or 'none'}")
    if client is not None:
        return None, "signature not checked: the registry is the control plane's"
    try:
        return artifact_signature(registry.get(name, version).path), ""
    except (RegistryError, ArtifactError, SignatureError) as exc:
        return None, f"signature not checked: {exc}"


def _simple(name: str) -> Callable[[Path], None]:
    def command(directory: Path) -> None:
        described = client_for(directory).command(name)
        click.echo(f"{described['name']}: {described['phase']} - {described['reason']}")
    command.__name__ = name
    return command
