"""docs/ARCHITECTURE.md's import directions are the code's: each room imports exactly the rooms it lists, no cycles."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in (ROOT / "kd_lightning").rglob("*.py"):
        parts = path.relative_to(ROOT / "kd_lightning").parts
        room = parts[0] if len(parts) > 1 else path.stem
        if room in ("__init__", "errors"):
            continue
        imported = set(re.findall(r"^\s*(?:from|import) kd_lightning\.(\w+)", path.read_text(), re.M))
        edges.setdefault(room, set()).update(imported - {room, "errors"})
    return edges


def documented_imports() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    lines = re.findall(r"^(\w+)\s+─►(.*)$", text, re.M)
    return {room: {r.strip() for r in rest.split(",") if r.strip()} for room, rest in lines}


def test_the_documented_import_directions_are_the_codes_and_have_no_cycle():
    code = code_imports()
    assert {room: sorted(rooms) for room, rooms in code.items()} == {
        room: sorted(rooms) for room, rooms in documented_imports().items() if room in code or rooms}
    done, visiting = set(), []

    def visit(room):
        assert room not in visiting, f"import cycle: {visiting + [room]}"
        if room in done:
            return
        visiting.append(room)
        for other in code.get(room, ()):
            visit(other)
        visiting.pop()
        done.add(room)

    for room in code:
        visit(room)
