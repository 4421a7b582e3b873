"""`llmdeploy prices`: show, refresh (AWS Price List API) or clear the price catalog in use."""

from __future__ import annotations

import sys

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table


@click.group(
    epilog="""\b
Examples:
  llmdeploy prices show
  llmdeploy prices refresh                      # every catalog region; needs AWS credentials
  llmdeploy prices refresh --region us-east-1 --json
  llmdeploy prices clear                        # back to the bundled snapshot
"""
)
def prices():
    """Show, refresh or clear the price catalog.

    llmdeploy ships a dated snapshot of AWS prices. `refresh` reads current
    prices from the AWS Price List API into a user cache, which every command
    then uses (LLMDEPLOY_BUNDLED_PRICES=1 ignores it); `clear` removes it.
    """


@prices.command(epilog="""\b
Examples:
  llmdeploy prices show
  llmdeploy prices show --rows --region us-east-1
  llmdeploy prices show --json | jq '.rows[] | select(.estimated)'
""")
@click.option("--rows", "show_rows", is_flag=True, help="Also list every price with its source, date and whether it is estimated.")
@click.option("--region", "regions", multiple=True, metavar="REGION", help="Only these regions' rows (with --rows); repeatable.")
@opt.json_option
def show(show_rows, regions, as_json):
    """Which prices are in use, how old the oldest is, rows per region, and the source of each price.

    The date shown first is the OLDEST date among the prices in use: how stale the worst figure may be.
    --json always lists every price row with its source, date and whether it is estimated.
    """
    from llmdeploy import catalog as cat_mod
    from llmdeploy import prices as lib

    info = lib.describe()
    cat = cat_mod.load_catalog()
    for region in regions:
        cat_mod.check_region(cat, region)
    by_key = {s.key: s for s in cat.sources.values()}
    # The headline is the oldest price in use; the newest stays alongside.
    info["newest_date"], info["date"] = info["date"], cat.oldest_price_date().isoformat()
    for src in info["sources"]:
        src["estimated"] = by_key[src["key"]].estimated
    rows = [r for r in cat_mod.price_rows(cat) if not regions or r["region"] in regions]
    info["rows"] = rows
    if as_json:
        opt.emit_json(info)
        return
    if info["in_use"] == "refreshed cache":
        click.echo(f"Prices in use: refreshed cache ({info['cache_dir']}); the oldest price dates from {info['date']}, "
                   f"the newest from {info['newest_date']}.")
    else:
        click.echo(f"Prices in use: bundled snapshot; the oldest price dates from {info['date']}, the newest from "
                   f"{info['newest_date']}.")
        if info["cache_present"] and info["bundled_forced"]:
            click.echo(f"A refreshed cache exists at {info['cache_dir']} but LLMDEPLOY_BUNDLED_PRICES=1 ignores it.")
    estimated = sum(1 for r in rows if r["estimated"])
    if estimated:
        click.echo(f"{estimated} of {len(rows)} price rows are ESTIMATED (derived, not published): marked * below.")
    click.echo("")
    click.echo(table(
        ["region", "EC2 rows", "SageMaker rows", "serverless", "from Price List API", "from snapshot", "newest price"],
        [[r["region"], r["ec2_rows"], r["sagemaker_hosting_rows"], "yes" if r["serverless"] else "-",
          r["rows_from_price_list_api"], r["rows_from_snapshot"], r["newest_price_date"] or "-"] for r in info["regions"]],
        right=[1, 2, 4, 5],
    ))
    click.echo("\nSources:")
    click.echo(table(["retrieved", "key", "estimated", "url"],
                     [[s["retrieved"], s["key"], "yes" if s["estimated"] else "", s["url"]] for s in info["sources"]]))
    if show_rows:
        click.echo("\nPrices:")
        click.echo(table(
            ["region", "kind", "item", "field", "price", "unit", "source", "date"],
            [[r["region"], r["kind"], r["item"], r["field"], f"{r['value']:g}" + ("*" if r["estimated"] else ""), r["unit"],
              r["source"], r["date"]] for r in rows],
            right=[4],
        ))


@prices.command(epilog="""\b
Examples:
  llmdeploy prices refresh
  AWS_PROFILE=billing llmdeploy prices refresh --region us-east-1 --region eu-west-1
  llmdeploy prices refresh --json > refresh-summary.json
""")
@opt.regions_option
@opt.json_option
def refresh(regions, as_json):
    """Read current EC2 and SageMaker prices from the AWS Price List API into the user cache.

    Reads EC2 Linux shared-tenancy on-demand and 1-/3-year Standard No Upfront
    reserved prices for every catalog instance type, SageMaker real-time hosting
    prices and SageMaker serverless rates. A price the API does not return is
    never dropped: the row (or reserved term) keeps its previous value and the
    summary says which and why (--json: per region, every row refreshed, added
    or kept). Needs AWS credentials allowed pricing:GetProducts; without them
    nothing is written.
    """
    from llmdeploy import prices as lib

    on_tty = sys.stderr.isatty() and not as_json
    bar = None

    def progress(phase, done, total, finished):
        nonlocal bar
        if on_tty:
            if bar is None:
                bar = click.progressbar(length=total, label=phase, file=sys.stderr, show_pos=True)
                bar.__enter__()
            bar.label = phase
            bar.update(done - bar.pos)
        elif finished:  # plain lines (logs, CI): one per finished step, so a failure prints only its error
            click.echo(f"read {phase} ({done}/{total} queries)", err=True)

    try:
        result = lib.refresh(regions or None, progress=progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        opt.emit_json(result.as_dict())
        return
    rows = []
    for s in result.regions:
        changes = s.biggest()
        rows.append([s.region, len(s.refreshed), len(s.added), len(s.kept), len(s.kept_terms),
                     str(changes[0]) if changes else "no change"])
        rows += [["", "", "", "", "", str(c)] for c in changes[1:]]
    click.echo(table(["region", "rows refreshed", "rows added", "rows kept", "RI terms kept", "biggest price changes"],
                     rows, right=[1, 2, 3, 4]))
    for s in result.regions:
        notes = [f"{k.row}: {k.why} (kept from {k.source})" for k in s.kept] + [str(t) for t in s.kept_terms]
        if notes:
            click.echo(f"\n{s.region}: the API did not price these, so they keep their previous value:")
            click.echo("\n".join(f"  {line}" for line in notes[:10]))
            if len(notes) > 10:
                click.echo(f"  ... and {len(notes) - 10} more (--json lists every row and why).")
        if s.not_priced:
            click.echo(f"{s.region}: {len(s.not_priced)} catalog rows have no price here, before or after (--json lists them).")
    click.echo(f"\nWrote {result.cache_dir} (AWS Price List API, {result.retrieved}; {result.items_read} price items from "
               f"{result.queries} queries). Load balancer and KMS prices are kept from the bundled snapshot.")
    click.echo("Every command now uses these prices; 'llmdeploy prices clear' goes back to the bundled snapshot.")


@prices.command(epilog="""\b
Examples:
  llmdeploy prices clear
""")
def clear():
    """Remove the refreshed price cache: every command goes back to the bundled snapshot."""
    from llmdeploy import catalog as cat_mod
    from llmdeploy import prices as lib

    removed = lib.clear()
    bundled = cat_mod.load_catalog_from(cat_mod.BUNDLED_DIR)
    if removed is None:
        click.echo(f"No refreshed cache at {cat_mod.user_cache_dir()}; already using the bundled snapshot of {bundled.snapshot_date}.")
    else:
        click.echo(f"Removed {removed}; using the bundled snapshot of {bundled.snapshot_date}.")
