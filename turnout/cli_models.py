"""``turnout models``, ``turnout deploy`` and ``turnout validate``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from gates.validation import ValidationReport
from triton_slots.artifact import ArtifactError, artifact_size, inspect, pack
from triton_slots.delivery.repository_api import MAX_ARTIFACT_BYTES
from triton_slots.registry import parse_ref
from turnout import workflow
from turnout.cli_common import dir_option, friendly, remote_client


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _packed(model_dir: Path) -> bytes:
    """The model directory as a gzip'd tar (what ``PUT /v1/models/...`` takes), checked
    here first so a broken config is named with its local path."""
    inspect(model_dir)
    size = artifact_size(model_dir)
    if size > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{model_dir} is {size / 2**20:.1f} MiB; a control plane takes at "
                            f"most {MAX_ARTIFACT_BYTES >> 20} MiB per artifact")
    return pack(model_dir)


def _table(records: list[dict]) -> list[str]:
    lines = [f"{'model':<24} {'digest':<12} {'slot':<6} {'stage':<11} created"]
    for r in records:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
        lines.append(f"{r['name'] + ':' + r['version']:<24} {r['digest'][:12]:<12} "
                     f"{r['slot'] or '-':<6} {r['stage']:<11} {created}")
    return lines


def _summary(data: dict) -> list[str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["created"]))
    lines = [f"{data['name']}:{data['version']}  stage {data['stage']}"
             + (f" ({data['stage_reason']})" if data.get("stage_reason") else ""),
             f"  digest   {data['digest']}", f"  slot     {data['slot'] or '-'}",
             f"  created  {created}", f"  source   {data['source']}"]
    if data.get("labels"):
        lines.append("  labels   " + ", ".join(f"{k}={v}" for k, v in data["labels"].items()))
    report = data.get("validation")
    if report:
        verdict = "passed" if report.get("passed") else "failed"
        lines.append(f"  validation {verdict} on {report.get('slot')}: "
                     + "; ".join(f"{c['name']} {'PASS' if c['passed'] else 'FAIL'}"
                                 for c in report.get("checks", [])))
    else:
        lines.append("  validation: none yet")
    return lines


def register(main: click.Group) -> None:
    @main.group()
    def models() -> None:
        """The model registry: push, list and show versioned Triton artifacts."""

    @models.command("push")
    @dir_option
    @friendly
    @click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--name", required=True, help="Model name (must match config.pbtxt).")
    @click.option("--model-version", "--version", "version", required=True,
                  help="The artifact's registry version, e.g. v2 (`--version` is accepted "
                       "too; `turnout --version` is Turnout's own).")
    @click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable.")
    @click.option("--source", default="", help="Where the artifact came from.")
    def models_push(directory: Path, model_dir: Path, name: str, version: str,
                    labels: tuple[str, ...], source: str) -> None:
        """Check a Triton model directory and store it as NAME:VERSION (in the local
        stack's registry, or sent to the control plane of a context)."""
        client = remote_client(directory)
        if client is not None:
            record = client.push_model(name, version, _packed(model_dir), source=source,
                                       labels=_labels(labels))
        else:
            record = workflow.registry_for(directory).push(
                model_dir, name=name, version=version, source=source,
                labels=_labels(labels)).as_dict()
        click.echo(f"pushed {record['name']}:{record['version']} digest "
                   f"{record['digest'][:12]} stage {record['stage']}")

    @models.command("list")
    @dir_option
    @friendly
    @click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
    def models_list(directory: Path, as_json: bool) -> None:
        """Every version with digest, slot and stage."""
        client = remote_client(directory)
        records = client.models() if client is not None else [
            r.as_dict() for r in workflow.registry_for(directory).list()]
        if as_json:
            click.echo(json.dumps(records, indent=2))
            return
        for line in _table(records):
            click.echo(line)

    @models.command("show")
    @dir_option
    @friendly
    @click.argument("ref")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the record and the whole report as JSON.")
    def models_show(directory: Path, ref: str, as_json: bool) -> None:
        """One version's metadata and its last validation report."""
        name, version = parse_ref(ref)
        client = remote_client(directory)
        if client is not None:
            data = client.model(name, version)
        else:
            registry = workflow.registry_for(directory)
            data = registry.get(name, version).as_dict()
            data["validation"] = registry.report(name, version, "validation")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for line in _summary(data):
            click.echo(line)

    @main.command("deploy")
    @dir_option
    @friendly
    @click.argument("ref")
    @click.option("--slot", type=click.Choice(["blue", "green"]), default=None,
                  help="Target slot (default: the idle one).")
    @click.option("--timeout", type=click.FloatRange(1, 600), default=120.0,
                  show_default=True,
                  help="Seconds to wait for every server to load and prove it.")
    @click.option("--force", is_flag=True,
                  help="Deploy onto the warm standby, giving up its instant rollback.")
    def deploy_cmd(directory: Path, ref: str, slot: str | None, timeout: float,
                   force: bool) -> None:
        """Load NAME:VERSION into every Triton server of the idle slot and verify it.
        Refused while a rollout uses that slot, or while it is the standby kept warm for
        an instant rollback (--force gives that rollback up)."""
        name, version = parse_ref(ref)
        client = remote_client(directory)
        if client is not None:  # the control plane deploys; its progress comes at the end
            click.echo(f"deploying {ref} (the control plane reports when done)")
            done = client.deploy_model(name, version, slot=slot, force=force, timeout=timeout)
            for line in done["log"]:
                click.echo(line)
            ref, target, servers = done["ref"], done["slot"], done["servers"]
            seconds, digest = done["seconds"], done["digest"]
        else:
            result = workflow.deploy_to_idle(directory, name, version, slot=slot,
                                             timeout=timeout, progress=click.echo, force=force)
            ref, target, servers = result.ref, result.slot, list(result.endpoints)
            seconds, digest = result.seconds, result.digest
        click.echo(f"{ref} deployed to {target} on {len(servers)} server(s) in "
                   f"{seconds:.1f}s (digest {digest[:12]} verified)")

    @main.command("validate")
    @dir_option
    @friendly
    @click.argument("ref")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.option("--force", is_flag=True,
                  help="Validate the warm standby too (a failure marks it failed).")
    def validate_cmd(directory: Path, ref: str, as_json: bool, force: bool) -> None:
        """Run the validation suite on the slot holding NAME:VERSION (exit 1 if it fails).
        Refused while a rollout uses the slots, or on the warm standby without --force."""
        name, version = parse_ref(ref)
        client = remote_client(directory)
        if client is not None:
            done = client.validate_model(name, version, force=force)
            if not as_json:
                for line in done["log"]:
                    click.echo(line)
            click.echo(json.dumps(done["report"], indent=2) if as_json else done["table"])
            passed = done["passed"]
        else:
            report: ValidationReport = workflow.validate(
                directory, name, version,
                progress=(lambda _: None) if as_json else click.echo, force=force,
            )
            click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.table())
            passed = report.passed
        if not passed:
            raise SystemExit(1)
