"""The shared diagnosis taxonomy: the same options in every scenario, neutral labels, every answer an option."""

from __future__ import annotations

from lab import parts
from lab.scenario import load_catalog, taxonomy
from lab.scenario.faults import FAULT_KINDS


def test_categories_are_the_fault_kinds_and_the_controls() -> None:
    assert list(taxonomy.categories()) == [*FAULT_KINDS, "none", "transient"]


def test_components_are_every_part_of_the_tracks_stack_and_the_host() -> None:
    comps = taxonomy.components(3)
    for p in parts.parts():
        names = [p.pattern.replace("{n}", str(n)) for n in (1, 2, 3)] if p.replicated else [p.name]
        if "fraud" in p.tracks:
            assert set(names) <= set(comps)
        else:  # another track's parts do not run in a fraud scenario's stack: no option
            assert not set(names) & set(comps), names
    assert taxonomy.HOST in comps


def test_labels_have_the_same_length_and_tone() -> None:
    for labels in (taxonomy.categories(), *(taxonomy.causes(t) for t in taxonomy.CAUSES)):
        lengths = [len(v) for v in labels.values()]
        assert max(lengths) - min(lengths) <= 12, labels
        assert all(v[0].isupper() and not v.endswith(".") for v in labels.values())


def test_every_catalog_answer_is_an_option_and_options_are_not_scenario_made() -> None:
    seen: dict[str, set[tuple[object, ...]]] = {}
    for s in load_catalog():
        opts = taxonomy.options(s)
        for kind, accepted in taxonomy.answers(s).items():
            assert set(accepted) <= set(opts[kind]), (s.id, kind)
        seen.setdefault(s.track, set()).add(tuple((k, tuple(sorted(v))) for k, v in opts.items()))
    for track, options in seen.items():
        assert len(options) == 1, f"every catalog scenario of the {track} track shows the same options"


def test_option_order_is_shuffled_per_seed_and_stable() -> None:
    s = next(iter(load_catalog()))
    orders = {tuple(o["id"] for o in taxonomy.questions(s, seed)[2]["options"]) for seed in range(6)}
    assert len(orders) > 1
    assert taxonomy.questions(s, 4) == taxonomy.questions(s, 4)


def test_the_docs_page_lists_every_option() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "taxonomy.md").read_text()
    for ident in [*taxonomy.categories(), *(c for t in taxonomy.CAUSES for c in taxonomy.causes(t)), taxonomy.HOST]:
        assert f"`{ident}`" in page, ident
