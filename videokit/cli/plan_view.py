"""What ``videokit plan`` shows: the scene graph, jobs, cache hits, frames and cost.

The cost is a range, from warm workers (none starts) to cold starts (every worker starts), with
what it includes: the jobs' run time, the workers' idle timeout and start time (RunPod bills a
worker from its start until it stops). A stage billed per GPU second shows its GPU pool (with its
cards where RunPod's catalog named them), rate, idle timeout and start time; one billed per output
(a RunPod Public Endpoint) its price; a self-hosted one "self-hosted" and your price, if any. Each
says where its figures come from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from videokit.billed_time import BilledTime
from videokit.cli.output import stdout
from videokit.costs import NOT_INCLUDED, CostModel, CostRange, OutputPrice
from videokit.pipeline.forecast import Forecast
from videokit.story.plan import StoryPlan

__all__ = ["plan_json", "print_plan"]


def plan_json(
    plan: StoryPlan,
    guess: Forecast,
    backend: str,
    workdir: Path,
    costs: CostModel | None = None,
    *,
    prices_note: str | None = None,
) -> dict[str, Any]:
    """The plan as one JSON document; with ``costs``, each GPU-billed stage's pool, cards, rate
    and its source (``gpu_prices``), and why the built-in table was used (``gpu_prices_note``)."""
    gpu_prices = {
        stage: {
            "pool": costs.pool(stage),
            "card": costs.cards.get(costs.pool(stage)),
            "usd_per_second": costs.price_per_second(stage),
            "source": costs.price_source(stage),
        }
        if costs.billing(stage) == "gpu"
        else {
            "pool": None,
            "card": None,
            "usd_per_second": costs.rate(stage),
            "source": _self_hosted_source(costs, stage),
        }
        for stage in ("edit", "animate")
        if costs is not None and stage not in costs.output_prices
    }
    span = guess.cost_range
    return {
        "type": "plan",
        "story": plan.story.title,
        "backend": backend,
        "workdir": str(workdir),
        "size": [plan.width, plan.height],
        "fps": plan.fps,
        "timeline": [
            {
                "scene": e.scene,
                "frames": e.frames,
                "drop_head": e.drop_head,
                "crossfade": e.crossfade,
            }
            for e in plan.timeline
        ],
        "branches": list(plan.branches),
        "longest_chain": plan.graph.longest_chain(),
        "warnings": list(plan.warnings),
        "final_frames": plan.final_frames,
        "formula": plan.frame_formula(),
        "scenes": {
            sid: {
                "from": s.source.describe(),
                "frames": s.frames,
                "frames_note": s.frames_note,
                "seed": s.seed,
                "seed_derived": s.seed_derived,
                "edit": guess.scenes[sid].edit,
                "animate": guess.scenes[sid].animate,
                "reason": guess.scenes[sid].reason,
                "gpu_seconds": round(guess.scenes[sid].gpu_seconds, 1),
                "cost_usd": round(guess.scenes[sid].cost_usd, 4),
            }
            for sid, s in plan.scenes.items()
        },
        "jobs": {"edit": guess.jobs("edit"), "animate": guess.jobs("animate")},
        "cached": {"edit": guess.cached("edit"), "animate": guess.cached("animate")},
        "gpu_seconds": round(guess.gpu_seconds, 1),
        "cost_usd": round(guess.cost_usd, 4),
        "all_jobs_gpu_seconds": round(guess.full_gpu_seconds, 1),
        "all_jobs_cost_usd": round(guess.full_cost_usd, 4),
        "cost_basis": "RunPod serverless GPU (see videokit.costs)"
        if not guess.output_prices
        else "RunPod serverless GPU, and RunPod Public Endpoints per output (see videokit.costs)",
        "output_prices": {
            stage: {"usd": price.usd, "per": price.per, "source": price.source}
            for stage, price in guess.output_prices.items()
        },
        "edit_size": list(plan.edit_size) if plan.edit_size is not None else None,
        "gpu_prices": gpu_prices,
        "gpu_prices_note": prices_note,
        # Stages that list several endpoints: each one's cost for the jobs to render, in order.
        "routes": {
            stage: [
                {"endpoint": label, "kind": kind, "cost_usd": round(usd, 4)}
                for label, kind, usd in choices
            ]
            for stage, choices in guess.route_costs.items()
        },
        "cost_worst_usd": round(max(guess.worst_cost_usd, guess.cost_usd), 4),
        # cost_usd is the jobs' run time alone; this adds the workers' start and idle time.
        "cost_range_usd": [round(span.warm_usd, 4), round(span.cold_usd, 4)]
        if span is not None
        else [round(guess.cost_usd, 4)] * 2,
        "cost_includes": _includes_json(costs, span),
    }


def _billed_json(billed: BilledTime, usd: float) -> dict[str, Any]:
    return {
        "start_s": round(billed.start_s, 1),
        "execution_s": round(billed.execution_s, 1),
        "idle_s": round(billed.idle_s, 1),
        "total_s": round(billed.total_s, 1),
        "workers": billed.workers,
        "workers_started": billed.workers_started,
        "usd": round(usd, 4),
    }


def _includes_json(costs: CostModel | None, span: CostRange | None) -> dict[str, Any]:
    """What ``cost_range_usd`` includes: a line, and per stage how it bills and its figures."""
    if costs is None or span is None:
        return {"summary": None, "stages": {}, "not_included": list(NOT_INCLUDED)}
    stages: dict[str, Any] = {}
    for stage in _in_order(span.billing):
        billing = span.billing[stage]
        entry: dict[str, Any] = {"billing": billing}
        if billing == "per-output":
            entry["usd"] = round(span.per_output_usd.get(stage, 0.0), 4)
        elif billing == "self-hosted":  # its run time only: no start, no idle of RunPod's
            rate, execution = costs.rate(stage), span.warm[stage].execution_s
            entry.update(usd_per_second=rate, execution_s=round(execution, 1))
            entry["usd"] = round(execution * rate, 4)
        else:
            rate = costs.rate(stage)
            warm, cold = span.warm[stage], span.cold[stage]
            entry["usd_per_second"] = rate
            entry["warm"] = _billed_json(warm, warm.total_s * rate)
            entry["cold"] = _billed_json(cold, cold.total_s * rate)
            entry["idle_timeout_s"] = costs.idle_timeout(stage)
            entry["start_s"] = costs.start_time(stage)
            entry["sources"] = {
                "idle_timeout": _fact_source(costs, stage, "idle_timeout"),
                "start": _fact_source(costs, stage, "start"),
            }
        stages[stage] = entry
    return {
        "summary": _includes(costs, span),
        "stages": stages,
        "not_included": list(NOT_INCLUDED),
    }


def _in_order(stages: Iterable[str]) -> list[str]:
    """Edit before animate, as everywhere in the plan."""
    order = ("edit", "animate")
    return sorted(stages, key=lambda stage: order.index(stage) if stage in order else len(order))


def _fact_source(costs: CostModel, stage: str, fact: str) -> str:
    """Where an endpoint fact of ``stage`` was set, or what its default is."""
    found = costs.fact_sources.get(f"{stage}.{fact}")
    if found:
        return found
    return "RunPod's default" if fact == "idle_timeout" else "assumed"


def _self_hosted_source(costs: CostModel, stage: str) -> str:
    where = costs.fact_sources.get(f"{stage}.self_hosted")
    if where:
        return f"self-hosted, set in {where}"
    if costs.self_hosted_price.get(stage, 0.0) is None:
        return f"self-hosted, at its GPU pool's rate ({costs.price_source(stage)})"
    return "self-hosted"


def _self_hosted_basis(costs: CostModel, stage: str) -> str:
    """``self-hosted, free``, or the price you gave it (or its GPU pool's rate) and where."""
    rate = f"${costs.rate(stage):.3g}/s"
    where = costs.fact_sources.get(f"{stage}.self_hosted")
    if where:
        return f"self-hosted, {rate} (set in {where})"
    if costs.self_hosted_price.get(stage, 0.0) is None:
        return f"self-hosted, on {costs.describe_pool(stage)}, {rate} ({costs.price_source(stage)})"
    return "self-hosted, free"


def _includes(costs: CostModel, span: CostRange) -> str | None:
    """One line: what the range includes, and what it does not (None: nothing runs on RunPod's
    GPU workers, so there is no start or idle time to speak of)."""
    stages = _in_order(span.billing)
    gpu = [stage for stage in stages if span.billing[stage] == "gpu"]
    if not gpu:
        return None
    execution = sum(span.warm[stage].execution_s for stage in span.warm)
    idles = [sum(billed[stage].idle_s for stage in gpu) for billed in (span.warm, span.cold)]
    low, high = min(idles), max(idles)
    idle = f"~{low:.0f} s" if round(low) == round(high) else f"~{low:.0f}-{high:.0f} s"
    timeouts = ", ".join(f"{stage} {costs.idle_timeout(stage):g} s" for stage in gpu)
    started = sum(span.cold[stage].workers_started for stage in gpu)
    starts = ", ".join(
        f"{stage} {span.cold[stage].workers_started} at {costs.start_time(stage):g} s"
        for stage in gpu
    )
    parts = [
        f"execution (~{execution:.0f} s)",
        f"idle time ({idle}: gaps between a worker's jobs, and its idle timeout after the last, "
        f"{timeouts})",
        f"with cold starts, the start time of {started} worker(s) ({starts})",
    ]
    hosted = [stage for stage in stages if span.billing[stage] == "self-hosted"]
    if hosted:
        parts.append(f"{' and '.join(hosted)} self-hosted: run time only")
    return f"includes {'; '.join(parts)}; not included: {', '.join(NOT_INCLUDED)}"


def _price_source(price: OutputPrice) -> str:
    """Where a per-output price comes from, briefly: an override's place, else the docs' date."""
    if price.source.startswith("overridden"):
        return price.source
    read = re.search(r"read (\d{4}-\d{2}-\d{2})", price.source)
    return "RunPod public endpoint" + (f", docs read {read[1]}" if read else "")


def _bases(costs: CostModel) -> dict[str, str]:
    """Per stage, what it is billed by: a GPU pool, or a price per output."""
    modes = {
        stage: f" in {mode} mode" for stage, mode in costs.modes.items() if mode != "lightning"
    }
    bases: dict[str, str] = {}
    for stage in ("edit", "animate"):
        price = costs.output_prices.get(stage)
        if price is not None:
            bases[stage] = f"{price.describe()} ({_price_source(price)})"
        elif costs.billing(stage) == "self-hosted":
            bases[stage] = _self_hosted_basis(costs, stage) + modes.get(stage, "")
        else:
            rate = f"${costs.price_per_second(stage):.3g}/s"
            where = costs.price_source(stage)
            idle = f"idle timeout {costs.idle_timeout(stage):g} s"
            start = f"start {costs.start_time(stage):g} s"
            bases[stage] = (
                f"on {costs.describe_pool(stage)}{modes.get(stage, '')}, {rate} ({where}); "
                f"{idle} ({_fact_source(costs, stage, 'idle_timeout')}), "
                f"{start} ({_fact_source(costs, stage, 'start')})"
            )
    return bases


def print_plan(
    plan: StoryPlan,
    guess: Forecast,
    backend: str,
    workdir: Path,
    costs: CostModel,
    *,
    prices_note: str | None = None,
) -> None:
    """Print the plan; ``prices_note`` says why GPU prices come from the built-in table."""
    console = stdout()
    console.print(
        f"[bold]{escape(plan.story.title)}[/]  {plan.width}x{plan.height} @ {plan.fps} fps"
    )
    edit_caps = plan.capabilities.edit
    if plan.edit_size is not None and edit_caps is not None:
        console.print(
            f"edits come back at {plan.edit_size[0]}x{plan.edit_size[1]} from "
            f"{escape(edit_caps.endpoint)}, and are animated at {plan.width}x{plan.height}"
        )
    console.print(f"work dir: {workdir}    backend: {backend}")
    tree = Tree("[bold]scene graph[/] (each scene starts from its parent's frame)")
    nodes: dict[str | None, Any] = {None: tree}
    for scene_id in plan.graph.topological():
        scene = plan.scenes[scene_id]
        parent_key = scene.source.scene
        parent = nodes.get(parent_key, tree)
        label = f"[bold]{scene_id}[/]"
        if scene.source.kind in ("reference", "file"):
            label += f"  from {escape(scene.source.describe())}"
        elif scene.source.kind == "scene_edit":
            label += "  from its edited frame"
        if scene.edit is not None:
            label += "  [magenta]edit[/]"
        if scene_id in plan.branches:
            label += "  [dim](branch, not on the timeline)[/]"
        nodes[scene_id] = parent.add(label)
    console.print(tree)
    chain = plan.graph.longest_chain()
    if len(chain) > 1:
        console.print(
            f"longest chain: {' → '.join(chain)} ({len(chain)} scenes that must run one after "
            "another; the others run alongside)"
        )

    # GPU seconds only mean something where a stage the story uses bills by them.
    on_gpu = any(stage not in costs.output_prices for stage in plan.stages())
    columns = ["scene", "frames", "seed", "edit", "animate", "est. GPU s", "est. $"]
    if not on_gpu:
        columns.remove("est. GPU s")
    table = Table(show_edge=False, header_style="bold")
    for column in columns:
        right = column.startswith(("est", "frames", "seed"))
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    marks = {"cached": "[green]cached[/]", "render": "[yellow]render[/]", "none": "-"}
    for scene_id, scene in plan.scenes.items():
        g = guess.scenes[scene_id]
        seed = f"{scene.seed}" + ("*" if scene.seed_derived else " ")
        gpu = [f"{g.gpu_seconds:.0f}"] if on_gpu else []
        table.add_row(
            scene_id,
            str(scene.frames),
            seed,
            marks[g.edit],
            marks[g.animate],
            *gpu,
            f"{g.cost_usd:.3f}",
        )
    console.print(table)
    if any(s.seed_derived for s in plan.scenes.values()):
        console.print("  * seed derived from the story seed and the scene id")
    for scene in plan.scenes.values():
        if scene.frames_note:
            console.print(f"  {scene.id}: duration {scene.frames_note}")
    console.print(f"final video: {plan.frame_formula()}")
    jobs = f"{guess.jobs('edit')} edit + {guess.jobs('animate')} animate jobs to run"
    hits = f"{guess.cached('edit')} edit + {guess.cached('animate')} animate cached"
    console.print(f"jobs: {jobs}; {hits}")
    bases = _bases(costs)
    jobs_n = sum(plan.job_count().values())
    if backend == "preview":
        gpu_s = f"take ~{guess.full_gpu_seconds:.0f} GPU-s and " if on_gpu else ""
        console.print(
            f"cost: free on the preview backend; on RunPod all {jobs_n} jobs would {gpu_s}"
            f"cost ~${guess.full_cost_usd:.3f}"
        )
    else:
        _print_estimate(guess, costs, on_gpu)
    # Per stage: its GPU pool, cards and rate, or its price per output, and where each came from.
    for stage in sorted(plan.stages(), key=("edit", "animate").index):
        console.print(f"  {stage}: {escape(bases[stage])}")
    _print_routes(guess)
    if prices_note:
        console.print(f"[yellow]{escape(prices_note)}[/]")


def _print_estimate(guess: Forecast, costs: CostModel, on_gpu: bool) -> None:
    """The estimate: a range where RunPod's GPU workers run jobs (their start and idle time are
    billed too), with what it includes; else the one figure it is."""
    console = stdout()
    gpu_s = f"~{guess.gpu_seconds:.0f} GPU-s, " if on_gpu else ""
    span = guess.cost_range
    billings = set(span.billing.values()) if span is not None else set()
    where = " on RunPod" if billings - {"self-hosted"} or not billings else " (self-hosted)"
    line = _includes(costs, span) if span is not None else None
    if span is None or line is None:
        console.print(f"estimate: {gpu_s}~${guess.cost_usd:.3f}{where}")
        return
    console.print(
        f"estimate: {gpu_s}~${span.warm_usd:.2f} (warm workers) … ~${span.cold_usd:.2f} "
        f"(cold starts){where}; the jobs' run time alone ~${guess.cost_usd:.3f}"
    )
    console.print(f"  {escape(line)}")


def _print_routes(guess: Forecast) -> None:
    """Stages that list several endpoints: every endpoint can render every scene (validate
    checked it), what the jobs to render would cost on each, and the worst case."""
    if not guess.route_costs:
        return
    console = stdout()
    for stage, choices in guess.route_costs.items():
        console.print(
            f"  {stage} endpoints, in order (each can render every scene; a job moves to the "
            "next when one fails transiently, stays queued too long or is unreachable):"
        )
        for n, (label, kind, usd) in enumerate(choices, start=1):
            console.print(f"    {n}. {escape(label)} ({kind}): ${usd:.3f}")
    worst = max(guess.worst_cost_usd, guess.cost_usd)
    console.print(
        f"  cost: ~${guess.cost_usd:.3f} on the first choices; up to ~${worst:.3f} if every job "
        "ends on its costliest endpoint (attempts that failed before it add their running time)"
    )
