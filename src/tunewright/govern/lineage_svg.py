"""The lineage chain as an inline SVG: one column per stage, a box per record, arrows for the edges.
Plain SVG (no scripts, no fonts to fetch) so browsers and WeasyPrint draw it alike."""

from __future__ import annotations

from html import escape

from .docs_data import DocFacts
from .lineage import STAGES, Node

BOX_W, BOX_H, COL_GAP, ROW_GAP, TOP = 160, 42, 46, 12, 34
MAX_ROWS = 10  # a column with more boxes shows the first ones and one "+N more" box
DOC_KINDS = ("model_card", "datasheet", "technical_documentation")
_COLOURS = {"source_file": "#e9ecef", "base_model": "#e9ecef", "synth_round": "#fff3bf", "review": "#ffe8cc",
            "dataset": "#d3f9d8", "run": "#d0ebff", "adapter": "#a5d8ff", "evaluation": "#e5dbff",
            "report": "#f3d9fa", "signoff": "#ffdeeb", "alias_change": "#c3fae8", "export": "#dee2e6"}
_CITABLE = {"synth_round", "dataset", "run", "adapter", "evaluation", "report", "signoff", "alias_change", "export"}


def drawn_nodes(facts: DocFacts) -> tuple[list[tuple[str, list[Node]]], list[tuple[str, str, str]]]:
    """Columns and edges to draw: the lineage plus the base model, without earlier generated documents."""
    lineage = facts.lineage
    hidden = {n.key for n in lineage.nodes if n.kind == "report" and n.details.get("kind") in DOC_KINDS}
    edges = [e for e in lineage.edges if e[0] not in hidden and e[1] not in hidden]
    by_stage = {stage: [n for n in nodes if n.key not in hidden] for stage, nodes in lineage.by_stage().items()}
    if facts.run is not None:
        # The base model is the run's other input: it shares the dataset's column, below it.
        base = Node("base_model", facts.run.base_model_sha256 or facts.run.base_model_ref, facts.run.base_model_ref)
        by_stage["dataset"] = by_stage.get("dataset", []) + [base]
        edges.append((base.key, f"run:{facts.run.id}", "input_to"))
    columns: list[tuple[str, list[Node]]] = []
    for stage in list(STAGES) + [s for s in by_stage if s not in STAGES]:
        nodes = by_stage.get(stage) or []
        if nodes:
            name = stage.replace("_", " ")
            if stage == "dataset" and facts.run is not None:
                name = "dataset, base model" if len(nodes) > 1 else "base model"
            columns.append((name, nodes))
    return columns, edges


def lineage_svg(facts: DocFacts) -> str:
    columns, edges = drawn_nodes(facts)
    places: dict[str, tuple[int, float, float]] = {}  # node key -> (column, x, y)
    boxes: list[str] = []
    for col, (stage, nodes) in enumerate(columns):
        x = col * (BOX_W + COL_GAP) + 4
        boxes.append(f'<text x="{x + BOX_W / 2}" y="16" class="stage">{escape(stage)}</text>')
        shown = nodes if len(nodes) <= MAX_ROWS else nodes[:MAX_ROWS - 1]
        for row, node in enumerate(shown):
            y = TOP + row * (BOX_H + ROW_GAP)
            places[node.key] = (col, x, y)
            boxes.append(_box(node, x, y))
        if len(shown) < len(nodes):
            y = TOP + len(shown) * (BOX_H + ROW_GAP)
            for node in nodes[len(shown):]:
                places[node.key] = (col, x, y)
            boxes.append(f'<g><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#f8f9fa" '
                         f'stroke="#adb5bd" stroke-dasharray="4 3"/><text x="{x + 8}" y="{y + 25}" class="label">'
                         f'+{len(nodes) - len(shown)} more</text></g>')
    rows = max((min(len(nodes), MAX_ROWS) for _, nodes in columns), default=1)
    bottom = TOP + rows * (BOX_H + ROW_GAP)
    arrows, lanes = [], 0
    for parent, child, relation in edges:
        if parent not in places or child not in places or places[parent] == places[child]:
            continue
        (pc, px, py), (cc, cx, cy) = places[parent], places[child]
        x1, y1, x2, y2 = px + BOX_W, py + BOX_H / 2, cx - 2, cy + BOX_H / 2
        if cc - pc == 1 or cc <= pc:
            bend = max(20.0, (x2 - x1) / 2)
            d = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        else:
            # Skipping columns: run in a lane under all boxes, so the arrow never crosses a box.
            lane = bottom + 4 + 7 * lanes
            lanes += 1
            a, b = x1 + COL_GAP / 2, x2 - COL_GAP / 2
            d = f"M{x1},{y1} H{a} V{lane} H{b} V{y2} H{x2}"
        arrows.append(f'<path d="{d}" class="edge" marker-end="url(#arrow)"><title>'
                      f'{escape(relation.replace("_", " "))}</title></path>')
    width = max(1, len(columns)) * (BOX_W + COL_GAP) - COL_GAP + 8
    height = bottom + 7 * lanes + 6
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="lineage of {escape(facts.adapter.name)}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/></marker></defs>'
            '<style>.stage{font:600 11px sans-serif;fill:#1d3557;text-anchor:middle}'
            '.label{font:11px sans-serif;fill:#1d3557}.sub{font:9px monospace;fill:#495057}'
            '.edge{fill:none;stroke:#495057;stroke-width:1.2}</style>'
            + "".join(arrows) + "".join(boxes) + "</svg>")


def _box(node: Node, x: float, y: float) -> str:
    label = node.label if len(node.label) <= 24 else node.label[:23] + "\u2026"
    sub = f"{node.kind.replace('_', ' ')} {node.id}"
    if node.kind in ("source_file", "base_model"):
        sub = f"sha256 {node.id[:12]}" if len(node.id) == 64 else node.kind.replace("_", " ")
    sub = sub if len(sub) <= 28 else sub[:27] + "\u2026"
    shape = (f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{_COLOURS.get(node.kind, "#fff")}" '
             f'stroke="#495057"/><text x="{x + 8}" y="{y + 17}" class="label">{escape(label)}</text>'
             f'<text x="{x + 8}" y="{y + 32}" class="sub">{escape(sub)}</text><title>{escape(node.label)}</title>')
    if node.kind in _CITABLE:
        anchor = f"#rec-{node.kind.replace('_', '-')}-{node.id}"
        return f'<a href="{anchor}">{shape}</a>'
    return f"<g>{shape}</g>"
