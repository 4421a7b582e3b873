"""`llmdeploy finetune up|status|down`: fine-tune GPU clusters that go away on their own.

Parsing and rendering only: validation and cost live in ``llmdeploy.finetune``,
EC2 reads in ``llmdeploy.aws.cluster``, Pulumi in ``llmdeploy.infra``.
"""

from __future__ import annotations

import getpass

import click

from llmdeploy.cli.options import Whole, emit_json, json_option, region_option, stack_option, yes_option
from llmdeploy.cli.render import table, usd


def _owner_default() -> str:
    # Only the built-in default: LLMDEPLOY_OWNER is the option's envvar, so it ranks above the config file.
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _public_ip_line(public_ip: bool | None, interfaces: int) -> str:
    """What ``finetune up`` will do about public IPv4, for the plan it prints before asking."""
    if public_ip is False:
        return "none (--no-public-ip): the subnet must route through a NAT gateway to reach the Hugging Face Hub, pip and S3"
    if interfaces == 1:
        return "AWS's own auto-assigned one" + (" (--public-ip)" if public_ip else ", where the subnet assigns one (default VPC: yes)")
    eip = (f"one Elastic IP per node ({interfaces} network interfaces: AWS auto-assigns none), "
           "billed hourly while allocated and released by `finetune down`")
    return eip + (" (--public-ip)" if public_ip else ", where the subnet auto-assigns public IPs (default VPC: yes)")


def _echo_pulumi(line: str) -> None:
    click.echo(line.rstrip("\n"), err=True)


@click.group()
def finetune() -> None:
    """Bring fine-tune GPU clusters up, watch them, take them down.

    \b
    Every cluster has a deadline (--ttl) and optionally an idle limit (--idle):
    each node powers itself off (and so terminates) when either is reached,
    and `llmdeploy reap` deletes whatever is past its deadline even if no
    node could. `finetune down` ends it now.

    \b
    Examples:
      llmdeploy finetune up --instances 2 --ttl 6h --idle 30m --ssh-cidr 203.0.113.7/32
      llmdeploy finetune status
      llmdeploy finetune down --yes
    """


@finetune.command("up")
@click.option("--instances", type=Whole(), default=None, metavar="N", help="Number of nodes (default: sized from --model).")
@click.option("--ttl", required=True, metavar="DURATION", help="Deadline from now: 6h, 90m, 1d2h. Nodes terminate at it.")
@click.option("--idle", metavar="DURATION", default=None, help="Also terminate a node whose GPUs sat idle this long (e.g. 30m).")
@click.option("--instance-type", default="p4d.24xlarge", show_default=True, metavar="TYPE", help="EC2 GPU instance type.")
@region_option
@click.option("--model", default=None, metavar="NAME", help="Size the cluster for fine-tuning this model when --instances is not given.")
@click.option("--ssh-cidr", default=None, metavar="CIDR", help="Allow SSH from this CIDR only (never 0.0.0.0/0). Default: no SSH.")
@click.option("--key-name", default=None, metavar="NAME", help="EC2 key pair for SSH.")
@click.option("--owner", envvar="LLMDEPLOY_OWNER", default=_owner_default, show_default="your login", help="Owner tag.")
@click.option("--cost-center", envvar="LLMDEPLOY_COST_CENTER", default="unassigned", show_default=True, help="Cost-center tag.")
@click.option("--ami", "ami_id", default=None, metavar="AMI", help="AMI id (default: newest Deep Learning AMI GPU PyTorch).")
@click.option("--subnet", "subnet_id", default=None, metavar="SUBNET", help="Subnet for all nodes (default: default VPC).")
@click.option("--public-ip/--no-public-ip", "public_ip", default=None,
              help="Give nodes a public IPv4 address (default: as the subnet auto-assigns; on in a default VPC). "
                   "Nodes with several network interfaces (p4d, p5) get an Elastic IP each, billed while allocated. "
                   "--no-public-ip: none, for a private subnet routed through a NAT gateway.")
@click.option("--checkpoint-uri", default=None, metavar="S3URI",
              help="s3://BUCKET/PREFIX/ the nodes may read and write (e.g. checkpoints/<stack>/ of your artifact "
                   "bucket); nothing else in S3. Default: no S3 access.")
@stack_option
@yes_option
def up(instances, ttl, idle, instance_type, region, model, ssh_cidr, key_name, owner, cost_center, ami_id, subnet_id, public_ip,
       checkpoint_uri, stack, yes):
    """Create a fine-tune cluster that terminates itself at its deadline.

    \b
    Nodes need a way out (Hugging Face Hub, pip, S3). AWS gives no public IP
    to a node with several network interfaces (p4d: 4 EFAs, p5: 32), so in a
    subnet that auto-assigns public IPs (a default VPC's) each such node gets
    an Elastic IP, released by `finetune down`. In a private subnet behind a
    NAT gateway pass --subnet and --no-public-ip.

    \b
    Examples:
      llmdeploy finetune up --instances 2 --ttl 6h --idle 30m
      llmdeploy finetune up --model flan-t5-xxl --ttl 1d --instance-type p4d.24xlarge
      llmdeploy finetune up --instances 4 --ttl 12h --subnet subnet-0abc123 --no-public-ip
    """
    from llmdeploy import finetune as ft
    from llmdeploy.catalog import load_catalog
    from llmdeploy.infra import automation
    from llmdeploy.tags import format_expiry

    stack = stack or ft.DEFAULT_STACK
    cat = load_catalog()
    now = ft.utcnow().replace(microsecond=0)
    plan = ft.plan_cluster(
        cat, stack=stack, region=region, instance_type=instance_type, instances=instances, ttl=ttl, idle=idle, model=model, now=now
    )
    ssh = ft.check_ssh_cidr(ssh_cidr) if ssh_cidr is not None else None
    checkpoints = ft.check_checkpoint_uri(checkpoint_uri) if checkpoint_uri is not None else None

    gpus = plan.instances * plan.gpus_per_instance
    click.echo(f"Stack {plan.stack} in {plan.region}: {plan.instances} x {plan.instance_type} ({gpus} GPU{'s' if gpus != 1 else ''}"
               f"{', EFA' if plan.efa else ''}{', sized for ' + model if model and instances is None else ''})")
    click.echo(f"  Cost:     {usd(plan.hourly_each)}/hour each, {usd(plan.hourly_total)}/hour in all (on-demand, catalog)")
    click.echo(f"  Expires:  {format_expiry(plan.expires_at)} (in {ft.format_duration(plan.expires_at - now)}); "
               f"at most {usd(plan.max_cost(now))} if it runs to the end")
    click.echo("  Idle:     " + (f"a node terminates after {plan.idle_minutes} min with GPUs idle" if plan.idle_minutes
                                 else "no idle limit (only the deadline)"))
    click.echo(f"  SSH:      {ssh or 'closed (use SSM Session Manager)'}; nodes carry an instance profile with "
               "AmazonSSMManagedInstanceCore")
    click.echo("  S3:       " + (f"read/write under {checkpoints} only" if checkpoints else
                                  "none (pass --checkpoint-uri s3://BUCKET/PREFIX/ to save checkpoints)"))
    click.echo(f"  Public IP: {_public_ip_line(public_ip, plan.interfaces_per_node)}")

    automation.pulumi_cli()  # fail before asking, not after
    if not yes:
        click.confirm("Create it?", abort=True)

    from llmdeploy.infra.finetune_cluster import FinetuneClusterArgs, program

    args = FinetuneClusterArgs(
        expires_at=plan.expires_at,
        instance_type=plan.instance_type,
        instance_count=plan.instances,
        ami_id=ami_id,
        subnet_id=subnet_id,
        ssh_cidr=ssh,
        key_name=key_name,
        idle_minutes=plan.idle_minutes,
        owner=owner,
        cost_center=cost_center,
        stack=plan.stack,
        efa=plan.efa,
        public_ip=public_ip,
        checkpoint_uri=checkpoints,
        catalog=cat,
    )
    handle = automation.select_stack(
        plan.stack,
        project_name=ft.PROJECT_NAME,
        program=program(args, name=plan.stack),
        config={"aws:region": plan.region, "llmdeploy:expires-at": format_expiry(plan.expires_at)},
    )
    outputs = automation.up(handle, on_output=_echo_pulumi)
    ids = _output_list(outputs, "instance_ids")
    click.echo(f"Up: {len(ids)} instance(s) {', '.join(map(str, ids))}; placement group {outputs.get('placement_group_name')}.")
    public_ips = [ip for ip in _output_list(outputs, "public_ips") if ip]
    if public_ips:
        click.echo(f"Public IPs: {', '.join(map(str, public_ips))}.")
    click.echo(f"They terminate by {format_expiry(plan.expires_at)}. "
               f"Watch: llmdeploy finetune status --stack {plan.stack} --region {plan.region}")


def _output_list(outputs: dict[str, object], key: str) -> list[object]:
    """A list-valued stack output (instance IDs, IPs); empty when the stack has none."""
    value = outputs.get(key)
    return value if isinstance(value, list) else []


@finetune.command("status")
@stack_option
@region_option
@json_option
@click.option("--now", "now_text", default=None, metavar="ISO", hidden=True, help="Pretend it is this time (tests).")
def status(stack, region, as_json, now_text):
    """Instances of a fine-tune stack: state, age, time left, accrued cost.

    \b
    Examples:
      llmdeploy finetune status
      llmdeploy finetune status --stack llama-ft --region us-west-2 --json
    """
    from llmdeploy import finetune as ft
    from llmdeploy.aws import cluster
    from llmdeploy.catalog import check_region, load_catalog
    from llmdeploy.enums import InstanceState
    from llmdeploy.tags import format_expiry

    stack = stack or ft.DEFAULT_STACK
    cat = load_catalog()
    check_region(cat, region)
    now = ft.parse_now(now_text)
    rows = cluster.cluster_status(stack, region, now=now, cat=cat)
    total = ft.total_accrued(rows)
    hourly = sum(r.hourly or 0.0 for r in rows if r.state in (InstanceState.PENDING, InstanceState.RUNNING))
    if as_json:
        emit_json({"stack": stack, "region": region, "now": format_expiry(now),
                   "instances": [r.as_dict() for r in rows], "usd_per_hour": hourly, "accrued_usd": round(total, 4)})
        return
    if not rows:
        click.echo(f"No llmdeploy instances of stack {stack!r} in {region}.")
        return
    cells = []
    for r in rows:
        left = "-" if r.time_left is None else ("expired" if r.time_left.total_seconds() <= 0 else ft.format_duration(r.time_left))
        cells.append([r.instance_id, r.instance_type, r.state, ft.format_duration(r.age), left,
                      "?" if r.hourly is None else f"{r.hourly:.2f}", usd(r.accrued_usd, missing="?")])
    click.echo(table(["INSTANCE", "TYPE", "STATE", "AGE", "TIME LEFT", "USD/H", "ACCRUED"], cells, right=[3, 4, 5, 6]))
    click.echo(f"{len(rows)} instance(s); {usd(hourly)}/hour now; accrued so far {usd(total)}.")


@finetune.command("down")
@stack_option
@region_option
@yes_option
def down(stack, region, yes):
    """Destroy a fine-tune stack, then make sure no instance of it is left running.

    \b
    Examples:
      llmdeploy finetune down
      llmdeploy finetune down --stack llama-ft --region us-west-2 --yes
    """
    from llmdeploy import finetune as ft
    from llmdeploy.aws import cluster
    from llmdeploy.catalog import check_region, load_catalog
    from llmdeploy.errors import CloudError, LlmdeployError
    from llmdeploy.infra import automation

    stack = stack or ft.DEFAULT_STACK
    cat = load_catalog()
    check_region(cat, region)
    before = cluster.cluster_status(stack, region, now=ft.utcnow(), cat=cat)
    click.echo(f"Stack {stack} in {region}: {len(before)} instance(s) running or stopped.")
    if not yes:
        click.confirm(f"Destroy stack {stack!r} and terminate its instances?", abort=True)

    problem: LlmdeployError | None = None
    try:
        automation.pulumi_cli()
        handle = automation.select_stack(stack, project_name=ft.PROJECT_NAME, program=lambda: None, config={"aws:region": region})
        automation.destroy(handle, on_output=_echo_pulumi, remove=True)
        click.echo(f"Destroyed Pulumi stack {stack}.")
    except LlmdeployError as exc:
        problem = exc
        click.echo(f"Could not destroy the Pulumi stack: {exc}", err=True)
        click.echo("Terminating the stack's instances directly; its security group and placement group stay until a "
                   "destroy succeeds.", err=True)

    left = cluster.terminate_leftovers(stack, region)
    end = ft.utcnow()
    for iid in left.terminated:
        click.echo(f"Terminated leftover instance {iid} (managed by llmdeploy, stack {stack}).")
    for iid, why in left.untouched:
        click.echo(f"Left alone {iid}: {why}. Check it by hand.", err=True)
    for iid, why in left.failed:
        click.echo(f"Could not terminate {iid}: {why}", err=True)
    for alloc, ip in left.released:
        click.echo(f"Released leftover Elastic IP {ip} ({alloc}, managed by llmdeploy, stack {stack}).")
    for alloc, why in left.release_failed:
        click.echo(f"Could not release Elastic IP {alloc}: {why} (it is billed while allocated).", err=True)
    if not left.terminated and left.clean:
        click.echo(f"EC2 check: no instance of stack {stack} left running in {region}.")
    cost = sum(ft.accrued_cost(r.launched, end, r.hourly) for r in before if r.hourly is not None and r.billed)
    click.echo(f"Final accrued cost (EC2 on-demand, catalog prices): {usd(cost)}.")
    if problem is not None:
        raise problem
    if not left.clean:
        raise CloudError(f"{len(left.untouched) + len(left.failed)} instance(s) and {len(left.release_failed)} Elastic IP(s) "
                         f"of stack {stack!r} are still there; see above.")
