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
