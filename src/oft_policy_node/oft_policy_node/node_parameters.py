"""Declare a node's parameters once, each with a description, read-only flag and validator.

A node lists `ParameterSpec`s; `declare_all` declares them with a ParameterDescriptor, checks
the start values (ValueError naming the parameter, the value and the rule) and, for the
writable ones, rejects invalid `ros2 param set` calls with the same message and hands accepted
values to the node's `on_change`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

Check = Callable[[Any], str | None]  # None when valid, else the rule that was broken


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    check: Check | None = None
    read_only: bool = True


def positive(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0.0 else 'must be a finite number > 0'


def non_negative(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0.0 else 'must be a finite number >= 0'


def positive_each(values: list[float]) -> str | None:
    return (
        None
        if len(values) and all(positive(v) is None for v in values)
        else 'must be a non-empty list of finite numbers > 0'
    )


def fraction(value: float) -> str | None:
    return None if 0.0 < value <= 1.0 else 'must be in (0, 1]'


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f'must be one of {list(choices)}'


def _problem(spec: ParameterSpec, value: Any) -> str | None:
    rule = spec.check(value) if spec.check else None
    return None if rule is None else f'parameter {spec.name}={value!r} {rule}'


def declare_all(
    node: Node, specs: Sequence[ParameterSpec], on_change: Callable[[str, Any], None] | None = None
) -> dict[str, Any]:
    """Declare `specs` on `node` and return their start values by name."""
    by_name = {spec.name: spec for spec in specs}
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        value = node.declare_parameter(spec.name, spec.default, descriptor).value
        problem = _problem(spec, value)
        if problem:
            raise ValueError(problem)
        values[spec.name] = value

    def validate(parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            problem = spec and _problem(spec, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        if on_change is not None:
            for parameter in parameters:
                if parameter.name in by_name:
                    on_change(parameter.name, parameter.value)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return values
