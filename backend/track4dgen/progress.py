"""Progress an artist can read: plain stage names, one overall fraction with a total ETA, and the
two ways of printing it.

Events stay the JSON-lines protocol the add-on, the server and the tests parse
(``{"stage", "step", "total", "message", "eta_s"}``); :class:`Plan` adds ``label`` (a plain
stage name), ``overall`` (0..1 over the whole job) and ``overall_eta_s`` (seconds until the whole
job is done). On a terminal :class:`HumanBar` draws one bar instead; ``--json`` (or output that
is not a terminal: a pipe, a file) keeps the JSON lines.

The total ETA extrapolates the running stage's measured speed to the stages still to come using
each stage's relative cost (``Plan.weights``). The costs are measured CPU ratios (see
:func:`job_plan`); the ETA of a later stage is re-measured as soon as it starts.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

STAGE_LABELS = {
    "validate": "Checking the job",
    "stage1": "Generating multi-view video",
    "track_warmup": "Following the point tracks",
    "stage2": "Fitting 4D Gaussians",
    "export": "Writing the result",
    "download": "Downloading weights",
    "demo": "Demo finished",
}


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage.replace("_", " ").capitalize())


class Plan:
    """The stages a job will run, in order, with their relative costs (any positive numbers)."""

    def __init__(self, weights: dict[str, float]) -> None:
        total = sum(weights.values())
        if not weights or total <= 0:
            raise ValueError("a plan needs at least one stage with a positive cost")
        self.weights = {k: v / total for k, v in weights.items()}
        self.order = list(weights)
        self._overall = 0.0

    def annotate(self, stage: str, step: int, total: int, eta_s: float | None, stage_elapsed_s: float) -> dict[str, Any]:
        """``overall`` and ``overall_eta_s`` for one event of ``stage`` (unplanned stages: nothing)."""
        if stage not in self.weights:
            return {}
        i = self.order.index(stage)
        done_before = sum(self.weights[s] for s in self.order[:i])
        later = sum(self.weights[s] for s in self.order[i + 1:])
        frac = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
        self._overall = max(self._overall, done_before + self.weights[stage] * frac)  # a bar never moves back
        overall_eta = None
        if eta_s is not None:
            stage_total_s = stage_elapsed_s + eta_s
            overall_eta = round(eta_s + stage_total_s / self.weights[stage] * later, 1)
        return {"overall": round(self._overall, 4), "overall_eta_s": overall_eta}


# Cost of one Stage One denoising step relative to one Stage Two iteration. Measured for the tiny
# model on a 2-core CPU (benchmarks/RESULTS.md, "First run from Blender": Preview, 10 steps in
# 14.9 s vs 180 iterations in 2528 s -> 0.1). The Animate3D step is unmeasured here (no weights,
# no GPU in that session): 2.0 is a guess, and the total ETA re-measures when Stage Two starts.
STAGE1_STEP_COST = {"tiny": 0.1, "animate3d": 2.0}
STAGE2_ITER_COST = 1.0
SDS_ITER_COST = 3.0  # an SDS iteration adds a diffusion-model call (not measured separately)
# a track warm-up step (every frame's field and track term, no rendering) vs a Stage Two iteration:
# 0.28 s vs ~0.19 s for the synthetic CPU settings (benchmarks/RESULTS.md "Track warm-up")
WARMUP_STEP_COST = 1.5
EXPORT_FRACTION = 0.03


def job_plan(has_videos: bool, stage1_steps: int, iters_rec: int, iters_sds: int, model: str = "animate3d",
             warmup_iters: int = 0) -> Plan:
    """The plan of ``track4dgen run``: [Stage One,] [the track warm-up,] Stage Two, export."""
    stage2 = max(iters_rec, 1) * STAGE2_ITER_COST + max(iters_sds, 0) * (0.0 if has_videos else SDS_ITER_COST)
    step_cost = STAGE1_STEP_COST.get(model, STAGE1_STEP_COST["animate3d"])
    weights = {} if has_videos else {"stage1": max(stage1_steps, 1) * step_cost}
    if warmup_iters > 0:
        weights["track_warmup"] = warmup_iters * WARMUP_STEP_COST
    weights["stage2"] = stage2
    weights["export"] = (sum(weights.values())) * EXPORT_FRACTION
    return Plan(weights)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class HumanBar:
    """Draws events as one updating line on a terminal: ``Fitting 4D Gaussians [####----] 45% 3:12 left``.

    Used as a ProgressReporter sink; errors are printed as ``error:``/``hint:`` lines.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.width = width
        self._label = ""
        self._open = False  # a bar line without its newline yet

    def _line(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(79) if self._open else text.ljust(79))
        self._open = True
        self.stream.flush()

    def _end(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False

    def __call__(self, event: dict[str, Any]) -> None:
        if "error" in event:
            self._end()
            self.stream.write(f"error: {event.get('message', event['error'])}\n")
            if event.get("hint"):
                self.stream.write(f"hint: {event['hint']}\n")
            self.stream.flush()
            return
        if "stage" not in event:
            return
        label = event.get("label") or stage_label(str(event["stage"]))
        if label != self._label:
            self._end()
            self._label = label
        frac = event.get("overall")
        eta = event.get("overall_eta_s")
        if frac is None:  # no plan: the stage's own fraction and ETA
            total = int(event.get("total") or 0)
            frac = int(event.get("step") or 0) / total if total > 0 else 0.0
            eta = event.get("eta_s")
        frac = min(max(float(frac), 0.0), 1.0)
        filled = int(round(frac * self.width))
        left = "" if eta is None and frac >= 1.0 else f"  {format_duration(eta)} left"
        self._line(f"{label:<28} [{'#' * filled}{'-' * (self.width - filled)}] {frac * 100:3.0f}%{left}")
        if event["stage"] in ("demo",) or (frac >= 1.0 and event["stage"] == "export"):
            self._end()

    def close(self) -> None:
        self._end()
        self.stream.flush()


def use_json(flag: bool, stream: TextIO | None = None) -> bool:
    """JSON lines when asked, or when the output is not a terminal (the add-on, the server, a file)."""
    stream = stream if stream is not None else sys.stdout
    if flag:
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def make_reporter(json_flag: bool = False, stream: TextIO | None = None, plan: Plan | None = None):
    """A ProgressReporter printing JSON lines or a human bar on ``stream`` (default stdout)."""
    from .job import ProgressReporter

    stream = stream if stream is not None else sys.stdout
    if use_json(json_flag, stream):
        reporter = ProgressReporter(stream=stream)
    else:
        reporter = ProgressReporter(sink=HumanBar(stream))
    reporter.plan = plan
    return reporter


def print_result(reporter, event: dict[str, Any]) -> None:
    """A final summary: one JSON line, or plain text on a terminal."""
    if isinstance(reporter.sink, HumanBar):
        reporter.sink.close()
        details = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("stage", "step", "total", "eta_s", "message"))
        reporter.sink.stream.write(f"{event.get('message', '')}: {details}\n")
        reporter.sink.stream.flush()
    else:
        reporter.emit(event)

