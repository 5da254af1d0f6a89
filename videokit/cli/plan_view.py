"""What ``videokit plan`` shows: the scene graph, jobs, cache hits, frames and cost.

A stage billed per GPU second shows its GPU pool (with its cards where RunPod's catalog named
them) and rate; one billed per output (a RunPod Public Endpoint) its price. Both say where the
figure comes from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from videokit.cli.output import stdout
from videokit.costs import CostModel, OutputPrice
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
        for stage in ("edit", "animate")
        if costs is not None and stage not in costs.output_prices
    }
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
    }


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
        else:
            rate = f"${costs.price_per_second(stage):.3g}/s"
            where = costs.price_source(stage)
            bases[stage] = (
                f"on {costs.describe_pool(stage)}{modes.get(stage, '')}, {rate} ({where})"
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
        gpu_s = f"~{guess.gpu_seconds:.0f} GPU-s, " if on_gpu else ""
        console.print(f"estimate: {gpu_s}~${guess.cost_usd:.3f} on RunPod")
    # Per stage: its GPU pool, cards and rate, or its price per output, and where each came from.
    for stage in sorted(plan.stages(), key=("edit", "animate").index):
        console.print(f"  {stage}: {escape(bases[stage])}")
    _print_routes(guess)
    if prices_note:
        console.print(f"[yellow]{escape(prices_note)}[/]")


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
