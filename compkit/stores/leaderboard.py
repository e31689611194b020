"""Public-leaderboard scores kept beside what was submitted: ``lb.json`` in a run or ensemble folder, so
``compkit runs`` shows cross-validation and leaderboard side by side (recorded by ``compkit submit --lb`` or
``compkit runs --lb NAME=SCORE``)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from compkit.util.errors import CompkitError
from compkit.util.fileio import read_json, write_json

LB_FILE = "lb.json"


def parse_score(text: str | float, what: str = "--lb") -> float:
    """A leaderboard score: a finite number."""
    try:
        score = float(text)
    except (TypeError, ValueError):
        raise CompkitError(what, f"{text!r} is not a score (a number such as 0.9712)") from None
    if not math.isfinite(score):
        raise CompkitError(what, f"{text!r} is not a finite score")
    return score


def lb_scores(folder: Path) -> list[dict[str, Any]]:
    """Every score recorded for ``folder``, oldest first (none: an empty list)."""
    path = Path(folder) / LB_FILE
    if not path.is_file():
        return []
    data = read_json(path)
    scores = data.get("scores") if isinstance(data, dict) else None
    if not isinstance(scores, list) or not all(isinstance(s, dict) and "score" in s for s in scores):
        raise CompkitError(path, "not a compkit leaderboard file (needs {scores: [{score: ...}, ...]})")
    return scores


def latest_lb(folder: Path) -> float | None:
    scores = lb_scores(folder)
    return float(scores[-1]["score"]) if scores else None


def record_lb(folder: Path, score: float, submission: str | Path | None = None) -> Path:
    """Add a public-leaderboard score to ``folder``'s ``lb.json`` (with the submission file and the time)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompkitError(folder, "no such run or ensemble folder to record a leaderboard score in")
    entry = {
        "score": float(score),
        "submission": None if submission is None else str(submission),
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(folder / LB_FILE, {"scores": [*lb_scores(folder), entry]})
    return folder / LB_FILE
