"""``turnout models``, ``turnout deploy`` and ``turnout validate``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from gates.validation import ValidationReport
from triton_slots.registry import parse_ref
from turnout import workflow
from turnout.cli_common import dir_option, friendly


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def register(main: click.Group) -> None:
    @main.group()
    def models() -> None:
        """The model registry: push, list and show versioned Triton artifacts."""

    @models.command("push")
    @dir_option
    @friendly
    @click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--name", required=True, help="Model name (must match config.pbtxt).")
    @click.option("--version", "version", required=True, help="Registry version, e.g. v2.")
    @click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable.")
    @click.option("--source", default="", help="Where the artifact came from.")
    def models_push(directory: Path, model_dir: Path, name: str, version: str,
                    labels: tuple[str, ...], source: str) -> None:
        """Check a Triton model directory and store it as NAME:VERSION."""
        registry = workflow.registry_for(directory)
        record = registry.push(model_dir, name=name, version=version,
                              source=source, labels=_labels(labels))
        click.echo(f"pushed {record.ref} digest {record.digest[:12]} stage {record.stage}")

    @models.command("list")
    @dir_option
    @friendly
    @click.option("--json", "as_json", is_flag=True)
    def models_list(directory: Path, as_json: bool) -> None:
        """Every version with digest, slot and stage."""
        records = workflow.registry_for(directory).list()
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in records], indent=2))
            return
        click.echo(f"{'model':<24} {'digest':<12} {'slot':<6} {'stage':<10} created")
        for r in records:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created))
            click.echo(f"{r.ref:<24} {r.digest[:12]:<12} {r.slot or '-':<6} {r.stage:<10} "
                       f"{created}")

    @models.command("show")
    @dir_option
    @friendly
    @click.argument("ref")
    def models_show(directory: Path, ref: str) -> None:
        """One version's metadata and its last validation report."""
        name, version = parse_ref(ref)
        registry = workflow.registry_for(directory)
        record = registry.get(name, version)
        data = record.as_dict()
        data["validation"] = registry.report(name, version, "validation")
        click.echo(json.dumps(data, indent=2))

    @main.command("deploy")
    @dir_option
    @friendly
    @click.argument("ref")
    @click.option("--slot", type=click.Choice(["blue", "green"]), default=None,
                  help="Target slot (default: the idle one).")
    @click.option("--timeout", type=float, default=120.0, show_default=True)
    @click.option("--force", is_flag=True,
                  help="Deploy onto the warm standby, giving up its instant rollback.")
    def deploy_cmd(directory: Path, ref: str, slot: str | None, timeout: float,
                   force: bool) -> None:
        """Load NAME:VERSION into every Triton server of the idle slot and verify it.
        Refused while a rollout uses that slot, or while it is the standby kept warm for
        an instant rollback (--force gives that rollback up)."""
        name, version = parse_ref(ref)
        result = workflow.deploy_to_idle(directory, name, version, slot=slot,
                                         timeout=timeout, progress=click.echo, force=force)
        click.echo(f"{result.ref} deployed to {result.slot} on {len(result.endpoints)} "
                   f"server(s) in {result.seconds:.1f}s (digest {result.digest[:12]} verified)")

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
        report: ValidationReport = workflow.validate(
            directory, name, version,
            progress=(lambda _: None) if as_json else click.echo, force=force,
        )
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.table())
        if not report.passed:
            raise SystemExit(1)
