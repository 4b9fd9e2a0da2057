"""docs/benchmarks.md sections: a run rewrites only its own sections and keeps everyone else's as found."""

from __future__ import annotations

from pathlib import Path

from bench import docs, wrk

MACHINE = {"cpu": "Test CPU", "nproc": 2, "memory_gib": 8.0, "system": "Linux", "python": "3.11.7",
           "load_average": 1.5}


def test_update_keeps_other_sections_and_replaces_its_own(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    proxy = "<!-- bench:proxy start -->\n## Network proxy\nkept as is\n<!-- bench:proxy end -->"
    path.write_text(f"# Benchmarks\n\n{proxy}\n")
    docs.update({"serving": "## Serving\nfirst"}, MACHINE, path)
    docs.update({"serving": "## Serving\nsecond", "memory": "## Memory\nm"}, MACHINE, path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- bench:header start -->")
    assert proxy in text and "second" in text and "first" not in text
    assert text.count("<!-- bench:serving start -->") == 1 and text.count("<!-- bench:header start -->") == 1
    assert text.index("bench:serving start") < text.index("bench:memory start")
    assert "Test CPU, 2 cores" in text and "faultline bench serving" in text


def test_wrk_script_quotes_bodies_safely(tmp_path: Path) -> None:
    body = b'{"rows":[{"note":"]]=] and ]==]"}]}'
    script = wrk.write_script(tmp_path / "s.lua", "/v1/predict", [body]).read_text()
    assert "[===[" + body.decode() + "]===]" in script
