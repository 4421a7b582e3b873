"""`llmdeploy estimate`: memory, fit, fine-tune needs and speed of a model, from its config."""

from __future__ import annotations

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import gib, table


@click.command(
    epilog="""\b
Examples:
  llmdeploy estimate                         # FLAN-T5-XL, its own dtype (fp32)
  llmdeploy estimate flan-t5-xxl --dtype bf16 --batch 8
  llmdeploy estimate mixtral-8x7b --dtype bf16           # total and active parameters
  llmdeploy estimate meta-llama/Llama-3.1-70B            # any Hub id (pip install 'llmdeploy[hub]')
  llmdeploy estimate Qwen/Qwen2.5-1.5B --revision main
  llmdeploy estimate ./my-model/config.json --loading streaming --json
  llmdeploy estimate flan-t5-xl --instance-type g4dn.xlarge --loading streaming
  llmdeploy estimate --list-models
"""
)
@opt.model_argument()
@opt.revision_option
@opt.dtype_option
@click.option("--batch", type=opt.BATCH, default=1, show_default=True, help="Requests served together.")
@click.option("--input-tokens", type=opt.TOKENS, default=256, show_default=True, help="Prompt length.")
@click.option("--output-tokens", type=opt.TOKENS, default=64, show_default=True, help="Generated tokens.")
@opt.buffer_option
@opt.loading_option
@opt.calibration_option
@click.option("--finetune-batch", type=opt.BATCH, default=8, show_default=True, help="Micro-batch for the fine-tune estimate.")
@click.option("--finetune-seq", type=opt.TOKENS, default=512, show_default=True, help="Sequence length for the fine-tune estimate.")
@click.option("--instance-type", "instance_types", multiple=True, metavar="TYPE", help="Only show fit for this type; repeatable.")
@click.option("--list-models", is_flag=True, help="List the bundled model configs and exit.")
@opt.region_option
@opt.catalog_option
@opt.json_option
def estimate(model, revision, dtype, batch, input_tokens, output_tokens, buffer, loading, calibration_files, finetune_batch,
             finetune_seq, instance_types, list_models, region, catalog_dir, as_json):
    """Size MODEL from its config: parameters, memory per dtype, fit per instance, fine-tune needs, speed.

    MODEL is a bundled name (default flan-t5-xl), a Hugging Face Hub id (org/name),
    or a path to a config.json or a model folder. No weights are read or
    downloaded: a Hub id fetches config.json, the safetensors index and the Hub's
    model info (HF_TOKEN for gated models; HF_HUB_OFFLINE uses the cache).
    """
    from llmdeploy import estimate as est
    from llmdeploy.catalog import load_catalog
    from llmdeploy.models import bundled_index

    if list_models:
        index = bundled_index()
        if as_json:
            opt.emit_json([{"name": n, **{k: str(v) for k, v in row.items()}} for n, row in index.items()])
        else:
            click.echo(table(["name", "hugging face id", "parameters"],
                             [[n, r["hf_id"], f"{r['parameters']:,}"] for n, r in index.items()], right=[2]))
        return
    report = est.estimate(
        model, revision=revision, cat=load_catalog(catalog_dir), region=region, dtype=dtype, batch=batch, input_tokens=input_tokens,
        output_tokens=output_tokens, buffer=buffer, loading=loading, finetune_batch=finetune_batch, finetune_seq=finetune_seq,
        instance_types=instance_types, calibration_files=calibration_files,
    )
    opt.echo_hub_notice((report.get("hub") or {}).get("notice"))
    if as_json:
        opt.emit_json(report)
        return
    _render(report)


def _render_parameters(r: dict) -> None:
    pc, b = r["parameter_count"], r["parameter_breakdown"]
    moe = (f", {pc['active']:,} active per token ({pc['experts_per_token']} of {pc['experts']} experts)"
           if pc["experts"] and pc["active"] != pc["total"] else "")
    click.echo(f"Parameters: {r['parameters']:,}{moe}  (embedding {b['embedding']:,}, "
               f"lm_head {b['lm_head']:,}{' tied' if not b['lm_head'] else ''}; {pc['method']})")
    if pc["hub"] is None:
        return
    dtypes = "".join(f"{d} {n:,}; " for d, n in pc["hub_by_dtype"].items())
    label = "Published" if pc["hub_kind"] == "published" else "Hub"
    said = f"{label}: {pc['hub']:,} ({dtypes}{pc['hub_source']})"
    if pc["used"] == "hub":
        click.echo(f"  {said}: used, as llmdeploy has no count of its own.")
    elif not pc["difference"]:
        click.echo(f"  {said}: the same as ours; sizing uses ours.")
    else:
        d = pc["difference"]
        click.echo(f"  {said}: {abs(d):,} {'more' if d > 0 else 'fewer'} than ours ({d / pc['llmdeploy']:+.2%}); "
                   "sizing uses ours (the Hub counts every tensor the checkpoint stores, buffers included).")


def _render(r: dict) -> None:
    m = r["model"]
    click.echo(f"{m['name']}  ({m['model_type']}, {'encoder-decoder' if m['encoder_decoder'] else 'decoder-only'}, config: {m['origin']})")
    _render_parameters(r)
    hub = r.get("hub") or {}
    if hub.get("weights_bytes"):
        click.echo(f"Checkpoint on the Hub: {gib(hub['weights_bytes'])} of weights as stored (model.safetensors.index.json total_size)")
    click.echo("Weights:    " + "   ".join(f"{d} {gib(b)}" for d, b in r["bytes_per_dtype"].items()))
    inf = r["inference"]
    click.echo(
        f"Inference ({r['dtype']}, batch {inf['batch']}, {inf['input_tokens']}+{inf['output_tokens']} tokens): "
        f"weights {gib(inf['weights_bytes'])} + KV cache {gib(inf['kv_cache_bytes'])} + activations {gib(inf['activation_bytes'])} "
        f"+ {inf['buffer_fraction']:.0%} buffer = {gib(r['inference_bytes'])}"
    )
    click.echo(f"Host RAM to load ({r['loading']}): {gib(r['host_ram_bytes'])}")
    click.echo("")
    click.echo(f"Fit in {r['region']} (cheapest on-demand first):")
    click.echo(table(
        ["instance", "GPUs", "GPU mem usable", "RAM", "fits", "TP", "why"],
        [[f["instance_type"], f"{f['gpu_count']} × {f['gpu']}", gib(f["gpu_usable_bytes"]), f"{f['ram_gib']:g} GiB",
          "yes" if f["fits"] else "no", f["tensor_parallel"] or "-", f["reason"]] for f in r["fits"]],
    ))
    click.echo("")
    click.echo("Full fine-tune with Adam:")
    click.echo(table(
        ["precision", "weights", "gradients", "optimizer", "activations", "total", "A100-40GB", "p4d.24xlarge"],
        [[ft["precision"], gib(ft["weights_bytes"]), gib(ft["gradients_bytes"]), gib(ft["optimizer_bytes"]),
          gib(ft["activation_bytes"]), gib(ft["total_bytes"]), ft["a100_40gb_gpus"], ft["p4d_instances"]] for ft in r["finetune"]],
        right=[1, 2, 3, 4, 5, 6, 7],
    ))
    for ft in r["finetune"]:
        click.echo(f"  {ft['precision']} counts {ft['counted']}")
    click.echo("")
    click.echo(f"Speed per request (batch {inf['batch']}; first token, then each further token):")
    click.echo(table(
        ["device", "on", "first token", "per token", "total", "tokens/s", "decode bound by", "speed from"],
        [[s["gpu"] or "CPU", s["instance_type"], f"{s['prefill_s'] * 1000:,.0f} ms", f"{s['decode_step_s'] * 1000:,.1f} ms",
          f"{s['total_s']:,.2f} s", f"{s['tokens_per_s']:,.1f}", s["bound"], s["speed_model"]] for s in r["latency"]],
        right=[2, 3, 4, 5],
    ))
    click.echo("Where each speed comes from ('llmdeploy calibrate' measures your own):")
    for c in r["calibrations"]:
        click.echo(f"  {c['device']}: {c['origin']}: {c['name']} [{c['date']}]")
    click.echo("")
    click.echo("Assumptions: " + "; ".join(r["assumptions"]))
