"""One row per scenario, and the table they make (Markdown, so the same text goes to the terminal and the docs)."""

from __future__ import annotations

import dataclasses

COLUMNS = ("scenario", "load", "faults injected", "jobs accepted", "reached the cluster exactly once", "duplicates",
           "lost", "stuck", "time to settle", "holds")


@dataclasses.dataclass
class Row:
    scenario: str
    load: str
    faults: str = "—"
    accepted: int | str = "—"
    exactly_once: int | str = "—"
    duplicates: int | str = "—"
    lost: int | str = "—"
    stuck: int | str = "—"
    settle_s: float | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def holds(self) -> bool:
        return not self.problems

    def cells(self) -> list[str]:
        settle = "never" if self.settle_s is None else f"{self.settle_s:.1f} s"
        if self.accepted == "—":
            settle = "—"
        return [self.scenario, self.load, self.faults, str(self.accepted), str(self.exactly_once),
                str(self.duplicates), str(self.lost), str(self.stuck), settle, "yes" if self.holds else "**NO**"]


def render(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |" for row in rows]
    details = []
    for row in rows:
        for note in row.notes:
            details.append(f"- {row.scenario}: {note}")
        for problem in row.problems[:10]:
            details.append(f"- {row.scenario}: VIOLATED: {problem}")
        if len(row.problems) > 10:
            details.append(f"- {row.scenario}: … and {len(row.problems) - 10} more violations")
    return "\n".join(lines + ([""] + details if details else [])) + "\n"
