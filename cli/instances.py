"""`llmdeploy instances`: the catalog's GPU instances in a region, with hardware and prices."""

from __future__ import annotations

from typing import Any

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table


@click.command(
    epilog="""\b
Examples:
  llmdeploy instances
  llmdeploy instances --region eu-west-1 --family g5 --family g6e
  llmdeploy instances --json | jq '.[] | select(.gpu == "A100-40GB")'
"""
)
@opt.region_option
@click.option("--family", "families", multiple=True, metavar="FAMILY", help="Only these families (g4dn, g5, p4d...); repeatable.")
@opt.catalog_option
@opt.json_option
def instances(region, families, catalog_dir, as_json):
    """List GPU instances priced in REGION, cheapest on-demand first, with SageMaker hosting prices."""
    from llmdeploy import catalog as cat_mod
    from llmdeploy.enums import Term

    cat = cat_mod.load_catalog(catalog_dir)
    rows: list[dict[str, Any]] = []  # the --json rows
    for inst in cat_mod.gpu_instances(cat, region, families or None):
        gpu = inst.gpu
        assert gpu is not None, f"gpu_instances lists GPU types only, not {inst.type}"
        price = cat.ec2[(region, inst.type)]
        hosting = cat.hosting.get((region, cat_mod.SAGEMAKER_PREFIX + inst.type))
        rows.append({
            "instance_type": inst.type, "gpu": gpu.name, "gpu_count": inst.gpu_count, "gpu_memory_gib": gpu.memory_gib,
            "gpu_memory_reported_mib": gpu.memory_reported_mib,
            "vcpus": inst.vcpus, "ram_gib": inst.ram_gib, "efa": inst.efa, "on_demand_hourly": price.on_demand,
            "ri_1y_hourly": price.ri_1y, "ri_3y_hourly": price.ri_3y,
            # Where each price came from: the EC2 row's source, and the SageMaker row's (a different one).
            "source": price.source.url, "source_key": price.source.key, "source_date": price.source.retrieved.isoformat(),
            "estimated": price.source.estimated,
            # A reserved term kept from elsewhere than the row (issue 17's ri_1y_source / ri_3y_source) names its own.
            "term_sources": {term: {"key": price.term_source(term).key, "date": price.term_source(term).retrieved.isoformat(),
                                    "estimated": price.term_source(term).estimated}
                             for term in Term if price.hourly(term) is not None},
            "sagemaker_hourly": hosting.hourly if hosting else None,
            "sagemaker_source": hosting.source.url if hosting else None,
            "sagemaker_source_key": hosting.source.key if hosting else None,
            "sagemaker_source_date": hosting.source.retrieved.isoformat() if hosting else None,
            "sagemaker_estimated": hosting.source.estimated if hosting else None,
        })
    if families and not rows:
        from llmdeploy.errors import UnknownChoiceError

        known = {i.family for i in cat_mod.gpu_instances(cat, region)}
        raise UnknownChoiceError(f"GPU family in {region}", ",".join(families), known)
    if as_json:
        opt.emit_json(rows)
        return

    def money(x: float | None) -> str:  # the header says $/h
        return "-" if x is None else f"{x:.3f}"

    click.echo(table(
        ["instance", "GPUs", "GPU mem", "vCPU", "RAM", "on-demand $/h", "1y RI $/h", "3y RI $/h", "SageMaker $/h", "sources"],
        [[r["instance_type"], f"{r['gpu_count']} × {r['gpu']}", f"{r['gpu_memory_gib']:g} GB", r["vcpus"], f"{r['ram_gib']:g} GiB",
          money(r["on_demand_hourly"]), money(r["ri_1y_hourly"]), money(r["ri_3y_hourly"]),
          money(r["sagemaker_hourly"]) + ("*" if r["sagemaker_estimated"] else ""),
          f"{r['source_key']} {r['source_date']}" + (f"; {r['sagemaker_source_key']} {r['sagemaker_source_date']}"
                                                     if r["sagemaker_source_key"] else "")] for r in rows],
        right=[3, 5, 6, 7, 8],
    ))
    oldest = min(min(r["sagemaker_source_date"] or r["source_date"], *(s["date"] for s in r["term_sources"].values()))
                 for r in rows) if rows else "-"
    click.echo(f"\nPrices: {cat.origin}, the oldest shown from {oldest} (EC2 Linux on-demand; RI = standard, no upfront, "
               "effective hourly). * estimated, not published: see 'llmdeploy prices show'.")
