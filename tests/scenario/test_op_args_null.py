"""A scenario operation's arguments as the runner sends them (`op_args`): unset optional arguments are left out, an
explicit null is kept, so that a solution can put a config key back to null (`config_set ... value: null`)."""

from __future__ import annotations

from pydantic import TypeAdapter

from lab.scenario.ops import Op, op_args

OPS: TypeAdapter[Op] = TypeAdapter(Op)


def test_an_explicit_null_value_is_sent() -> None:
    op = OPS.validate_python({"op": "config_set", "args": {"service": "llm-1", "key": "speculative_draft",
                                                           "value": None}})
    assert op_args(op) == {"service": "llm-1", "key": "speculative_draft", "value": None}


def test_unset_optional_arguments_are_left_out() -> None:
    op = OPS.validate_python({"op": "logs", "args": {"service": "gateway"}})
    assert op_args(op) == {"service": "gateway"}
    assert op_args(OPS.validate_python({"op": "metrics"})) == {}


def test_a_rendered_pattern_demands_only_what_it_names() -> None:
    """A rendered scenario re-validates its dumped operations, so every argument counts as given, unset ones as
    null: a pattern must still match whatever it does not name (an evidence `metrics` pattern, any window)."""
    op = OPS.validate_python({"op": "metrics", "args": {"service": None}})
    assert op_args(op) == {}
    dumped = OPS.validate_python({"op": "logs", "args": {"service": "gateway"}}).model_dump()
    assert op_args(OPS.validate_python(dumped)) == {"service": "gateway"}
