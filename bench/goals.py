"""How every benchmark reports its goals: one line per goal, ``[met]`` or ``[missed]``, then the figure.

A goal printed without its verdict leaves the reader to compare numbers by eye; one
printed as "NOT met" by one script and silently by another cannot be searched for.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """A goal as the benchmark's issue states it, and whether this run's figure reached it."""

    text: str  # e.g. "rollback to warm <= poll interval + 0.5 s (2.5 s)"
    met: bool
    figure: str = ""  # what was measured, e.g. "worst 1.06 s"

    def line(self) -> str:
        verdict = "[met]" if self.met else "[missed]"
        return f"  {verdict:<9}{self.text}" + (f": {self.figure}" if self.figure else "")


def report(goals: list[Goal], title: str = "goals") -> str:
    """The goals block a benchmark ends with."""
    return "\n".join([f"{title}:", *(goal.line() for goal in goals)])
