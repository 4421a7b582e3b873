"""`llmdeploy reap`: delete expired llmdeploy-managed resources in every region.

Exit status (for cron jobs and CI):
  0  nothing expired remains: nothing was expired, or --yes deleted all of it;
  1  something expired remains: a dry run found expired resources (run again
     with --yes), a deletion failed, or a region could not be listed;
  2  bad flags (unknown region, bad --now).
"""

from __future__ import annotations

import sys

import click

from llmdeploy.cli.options import Whole, emit_json, json_option, regions_option, yes_option
from llmdeploy.cli.render import usd


def _table(items, title: str) -> None:
    from llmdeploy.tags import format_expiry

    click.echo(title)
    click.echo(f"  {'REGION':<14} {'KIND':<25} {'ID':<40} {'EXPIRED AT':<21} {'USD/H':>8}  NOTE")
    for i in items:
        when = format_expiry(i.expires_at) if i.expires_at else "-"
        hourly = "?" if i.hourly is None else f"{i.hourly:.3f}"
        click.echo(f"  {i.region:<14} {i.kind:<25} {i.id:<40} {when:<21} {hourly:>8}  {i.detail}")


@click.command()
@regions_option
@yes_option
@json_option
@click.option("--concurrency", type=Whole(1, 256), default=16, show_default=True, help="Deletions in flight at once.")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Treat this UTC time as now (tests, what-ifs).")
def reap(regions, yes, as_json, concurrency, now_text):
    """Delete llmdeploy-managed resources whose expires-at has passed.

    \b
    Without --yes this is a dry run: it lists what would go and its hourly cost.
    Only resources tagged managed-by=llmdeploy are touched; llmdeploy:protect=true
    is skipped and listed. Sweeps EC2 instances, Elastic IPs (billed while
    allocated; one still attached is released only from an llmdeploy instance
    that is terminated or expired), SageMaker endpoints (with their configs and
    models), endpoint configs and models that no endpoint uses any more
    (anything in use is kept and listed) and Pulumi stacks in the local file
    backend.
    \b
    Exit status: 0 when nothing expired remains; 1 when something expired remains
    (a dry run that found some, a failed deletion, a region that could not be
    listed); 2 for bad flags.

    \b
    Examples:
      llmdeploy reap                                  # dry run, every catalog region
      llmdeploy reap --yes --region us-east-1
      llmdeploy reap --json --now 2026-11-23T09:00:00Z   # what would be expired tomorrow morning
    """
    import botocore  # noqa: F401 - fail here, with the extra to install, not once per region below

    from llmdeploy import finetune as ft
    from llmdeploy.aws import reaper
    from llmdeploy.catalog import check_region, load_catalog
    from llmdeploy.infra.automation import local_state_dir
    from llmdeploy.tags import format_expiry

    cat = load_catalog()
    now = ft.parse_now(now_text)
    chosen = [check_region(cat, r) for r in dict.fromkeys(regions)] or list(cat.regions)
    state = local_state_dir()
    result = reaper.scan(chosen, now=now, cat=cat, concurrency=concurrency, state_dir=state if state and state.is_dir() else None)
    expired, skipped = result.expired, result.skipped
    reasons = {e.split(": listing failed: ", 1)[-1] for e in result.errors}
    if result.errors and not result.items and len(result.errors) >= 2 * len(chosen) and len(reasons) == 1:
        from llmdeploy.errors import CloudError

        raise CloudError(f"could not list any region ({', '.join(chosen)}): {reasons.pop()}.")

    if not as_json:
        click.echo(f"Swept {', '.join(chosen)} at {format_expiry(now)}.")
        if expired:
            _table(expired, f"{'Deleting' if yes else 'Would delete'} {len(expired)} expired resource(s), {usd(result.hourly_total)}/hour:")
        elif result.errors:
            click.echo(f"Nothing expired found, but {len(result.errors)} listing(s) failed (below): some regions were not checked.")
        else:
            click.echo("Nothing expired.")
        if skipped:
            _table(skipped, f"Skipped {len(skipped)} (protected, in use or unreadable expiry):")
        for err in result.errors:
            click.echo(f"Error: {err}", err=True)

    outcomes = []
    if yes and expired:
        outcomes = reaper.reap(expired, now=now, concurrency=concurrency, on_done=_progress(len(expired), quiet=as_json))
    failed = reaper.remaining_expired(outcomes)

    if as_json:
        emit_json(
            {
                "now": format_expiry(now),
                "regions": chosen,
                "dry_run": not yes,
                "expired": [i.as_dict() for i in expired],
                "skipped": [i.as_dict() for i in skipped],
                "errors": result.errors,
                "usd_per_hour": round(result.hourly_total, 4),
                "results": [o.as_dict() for o in outcomes],
                "failed": len(failed),
            }
        )
    else:
        if yes and expired:
            done = len(outcomes) - len(failed)
            click.echo(f"Done: {done} of {len(expired)} handled, {len(failed)} failed.")
            for o in failed:
                click.echo(f"Failed: {o.item.region} {o.item.kind} {o.item.id}: {o.message}", err=True)
        elif expired:
            click.echo("Dry run: nothing deleted. Run again with --yes to delete them.")

    remains = bool(result.errors) or bool(failed) or (bool(expired) and not yes)
    sys.exit(1 if remains else 0)


def _progress(total: int, *, quiet: bool):
    """A click progress bar on a terminal, one plain line per result otherwise (stderr either way)."""
    if not quiet and sys.stderr.isatty():
        bar = click.progressbar(length=total, label="Reaping", file=sys.stderr)
        bar.__enter__()
        seen = [0]

        def on_done(outcome) -> None:
            bar.update(1)
            seen[0] += 1
            if seen[0] >= total:
                bar.__exit__(None, None, None)

        return on_done

    def on_line(outcome) -> None:
        mark = "ok" if outcome.ok else "FAILED"
        click.echo(f"{mark}: {outcome.item.region} {outcome.item.kind} {outcome.item.id}: {outcome.message}", err=True)

    return on_line
