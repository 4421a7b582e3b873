"""`llmdeploy package`: a reproducible model.tar.gz for the LMI container."""

from __future__ import annotations

import sys

import click

from llmdeploy.cli.options import emit_json, json_option, serving_option, serving_options


@click.command(
    epilog="""\b
Examples:
  llmdeploy package --model ./flan-t5-xl --out model.tar.gz
  llmdeploy package --model ./flan-t5-xl --out model.tar.gz --dtype bf16 --max-batch-size 16
  llmdeploy package --model-id google/flan-t5-xl --out code-only.tar.gz
  llmdeploy package --model-id s3://my-bucket/flan-t5-xl/ --out code-only.tar.gz
  llmdeploy package --model ./flan-t5-xl --out model.tar.gz --backend ctranslate2
  llmdeploy package --model ./flan-t5-small --out serverless.tar.gz --batching continuous
""",
)
@click.option("--model", "model_dir", metavar="DIR", help="Model folder (save_pretrained output) to put under weights/.")
@click.option("--model-id", metavar="ID",
              help="Weights for LMI to load instead of packaged ones: a Hub id, an s3:// URI or an absolute path.")
@click.option("--out", "out", default="model.tar.gz", show_default=True, metavar="FILE", help="Tarball to write.")
@serving_options
@serving_option("--tensor-parallel-degree", "tensor_parallel_degree", "GPUs one model copy is split across.")
@json_option
def package(model_dir, model_id, out, dtype, backend, batching, max_batch_size, max_batch_delay_ms, max_new_tokens, max_num_beams,
            max_request_tokens, tensor_parallel_degree, as_json):
    """Build a reproducible model.tar.gz (serving.properties + handler + optional weights)."""
    from llmdeploy.containers.package import PackageSettings, build_model_tarball
    from llmdeploy.errors import UsageError

    if not model_dir and not model_id:
        raise UsageError("give --model DIR (weights to package) or --model-id ID (weights loaded by LMI).")
    if model_dir and model_id:
        raise UsageError("give either --model or --model-id, not both.")
    settings = PackageSettings(dtype=dtype, backend=backend, batching=batching, max_batch_size=max_batch_size,
                               max_batch_delay_ms=max_batch_delay_ms, tensor_parallel_degree=tensor_parallel_degree,
                               max_new_tokens=max_new_tokens, max_num_beams=max_num_beams,
                               max_request_tokens=max_request_tokens, model_id=model_id)
    interactive = sys.stdout.isatty() and not as_json
    bar_cm = click.progressbar(length=1, label="Packaging", show_percent=True, show_eta=True) if interactive else None

    state = {"last_pct": -1}

    def progress(done: int, total: int, name: str) -> None:
        if bar_cm is not None:
            bar_cm.length = max(total, 1)
            bar_cm.update(done - bar_cm.pos)
        elif not as_json and total >= (256 << 20):  # plain lines for large folders when not a TTY
            pct = int(done * 100 / total) // 10 * 10
            if pct != state["last_pct"]:
                state["last_pct"] = pct
                click.echo(f"packaging {pct}% ({done >> 20} of {total >> 20} MiB)", err=True)

    if bar_cm is not None:
        with bar_cm:
            result = build_model_tarball(out, settings, weights_dir=model_dir, progress=progress)
    else:
        result = build_model_tarball(out, settings, weights_dir=model_dir, progress=progress)

    if as_json:
        emit_json({"path": str(result.path), "sha256": result.sha256, "bytes": result.size,
                   "members": list(result.members), "adapted": list(result.adapted)})
        return
    for name in result.adapted:
        click.echo(f"adapted {name} (written by transformers 5) so that the LMI images' transformers 4.x loads it",
                   err=True)
    click.echo(f"wrote {result.path} ({result.size:,} bytes, {len(result.members)} files)")
    click.echo(f"sha256 {result.sha256}")
