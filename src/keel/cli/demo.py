"""`keel demo`: a minute of realistic traffic through a running Keel, so every page has data.

The traffic is planned and sent by keel.demo; this module reads the options, shows progress on
standard error and prints the summary on standard output.
"""

from __future__ import annotations

import asyncio
import textwrap
from typing import TYPE_CHECKING

import click

from keel.cli.client import CliError, KeelClient
from keel.demo.client import DemoError
from keel.demo.scenario import PROMPT_NAME

if TYPE_CHECKING:
    from keel.demo.runner import Tally

__all__ = ["demo"]


_INDENT = "\n           "  # under the value column of the summary
_KINDS = (
    ("agent", "by the agent"),
    ("chat", "chat"),
    ("stream", "streamed chat"),
    ("prompt", "with the registry prompt"),
    ("embedding", "embeddings"),
    ("slow", "slow"),
    ("error", "failing on purpose"),
)


def _costs(tally: Tally) -> str:
    if tally.cost_usd > 0:
        return (
            f"${tally.cost_usd:.6f} for the plain calls; streamed ones are priced too (see /costs)"
            f"{_INDENT}at the models' list prices (the price book, or this Keel's `prices:`)"
        )
    return "$0: no priced model answered (mock/echo and mock/embed are free)"


def _summary(tally: Tally, url: str) -> str:
    kinds = ", ".join(f"{tally.by_kind[k]} {what}" for k, what in _KINDS if tally.by_kind[k])
    kinds += f"; {tally.streams} streamed in all"
    spans = f"{tally.spans_exported} spans accepted by Keel"
    if tally.spans_failed:
        spans += f", {tally.spans_failed} not"
    scores = f"{tally.scores} (human, rule and model)"
    if tally.scores_failed:
        scores += f", {tally.scores_failed} refused"
    versions = " and ".join(f"v{v}" for v in tally.prompt_versions)
    lines = [
        f"keel demo sent {tally.calls} gateway calls to {url} in {tally.elapsed_s:.1f} s",
        textwrap.fill(kinds, 96, initial_indent="  calls:   ", subsequent_indent=_INDENT[1:]),
        f"  errors:  {tally.planned_errors} planned, {tally.unexpected_errors} unexpected",
        f"  traces:  {tally.traces} agent turns in {len(tally.sessions)} sessions, "
        f"{tally.error_traces} with a failed span ({tally.unanswered} unanswered)",
        f"           {spans}",
        f"  scores:  {scores}",
        f"  prompt:  {PROMPT_NAME} {versions}, production -> v{max(tally.prompt_versions)}",
        f"  alert:   {tally.alert_rule or 'none (this Keel has no alerts API)'}",
        f"  costs:   {_costs(tally)}",
    ]
    if tally.skipped_steps:
        lines.append(f"  {tally.skipped_steps} planned steps did not start within --duration")
    lines += [f"  ! {message}" for message in tally.messages]
    pages = [
        ("/", "overview"),
        ("/requests", "gateway calls"),
        ("/traces", "traces"),
        ("/sessions", "sessions"),
        ("/costs", "cost and tokens by model, customer, pipeline"),
        ("/alerts", "alert rules and events"),
        (f"/prompts/{PROMPT_NAME}", "the demo prompt"),
    ]
    if tally.trace_ids:
        pages.insert(3, (f"/traces/{tally.trace_ids[0]}", "one agent trace"))
    width = max(len(path) for path, _ in pages)
    lines.append(f"Open {url}/ to look around:")
    lines += [f"  {path.ljust(width)}  {what}" for path, what in pages]
    if tally.unexpected_errors:
        lines.append(f"{tally.unexpected_errors} failures were not planned: see the `!` lines")
    return "\n".join(lines)


@click.command("demo")
@click.option("--url", default=None, help="Keel to send traffic to.  [default: keel's --url]")
@click.option("--api-key", default=None, help="Admin key.  [default: keel's --api-key]")
@click.option(
    "--duration",
    type=click.FloatRange(min=1, max=3600),
    default=45.0,
    show_default=True,
    help="Seconds to spread the traffic over; nothing starts after them.",
)
@click.option(
    "--requests",
    "calls",
    type=click.IntRange(min=1, max=100_000),
    default=300,
    show_default=True,
    help="Gateway calls to send at most.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same traffic.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    help="Steps in flight at most.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    url: str | None,
    api_key: str | None,
    duration: float,
    calls: int,
    seed: int,
    concurrency: int,
) -> None:
    """Send a realistic mix of traffic through a running Keel (mock models only)."""
    # imported here: OpenTelemetry's SDK and exporter are not for the other commands to load
    from keel.demo.progress import Progress
    from keel.demo.runner import DemoOptions, run_demo

    client = ctx.find_object(KeelClient) or KeelClient()
    target = (url or client.url).rstrip("/")
    options = DemoOptions(
        url=target,
        api_key=api_key or client.api_key,
        duration_s=duration,
        requests=calls,
        seed=seed,
        concurrency=concurrency,
    )
    progress = Progress()
    try:
        tally = asyncio.run(run_demo(options, progress, on_start=progress.start))
    except DemoError as exc:
        raise CliError(str(exc)) from None
    finally:
        progress.finish()
    click.echo(_summary(tally, target))
    if tally.unexpected_errors:
        raise SystemExit(1)
