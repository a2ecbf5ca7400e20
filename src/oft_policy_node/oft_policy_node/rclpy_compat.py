"""The rclpy API the nodes rely on where it differs between the ROS 2 distributions they run on
(Humble rclpy 3.3, Jazzy 7.1, Kilted 9.1), each branch point checked against ros2/rclpy.

Everything else the nodes call exists with the same signature on all three (checked: init,
Context, executors, Node, publishers, subscriptions, services, clients, timers with clock=,
parameters, jump callbacks, loggers with throttle_duration_sec / once, serialization).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from rclpy.task import Future


def subscriptions_pass_message_info() -> bool:
    """Whether a subscription callback that takes two arguments is given (msg, message_info).

    Jazzy and Kilted detect the callback's arity when it is set and pass the rmw's message info
    (a dict: source_timestamp, received_timestamp, ... in ns) to two-argument callbacks: Jazzy
    rclpy/subscription.py:33-35 (`Subscription.CallbackType`) and 109-125, executors.py:383-396
    (7.1.3; the same in 7.1.6); Kilted 9.1.2 rclpy/subscription.py:46-48, 121-139, executors.py
    477-491, where it is also typed as `rclpy.subscription.MessageInfo` (Jazzy exports no such
    name). Humble calls every callback with the message alone and drops the info it took:
    rclpy/executors.py:353-362 (3.3.15), so a two-argument callback raises TypeError on the
    first message. `Subscription.CallbackType` exists exactly where the info is passed.
    """
    return hasattr(Subscription, 'CallbackType')


def subscribe_with_arrival(
    node: Node,
    msg_type: type,
    topic: str,
    callback: Callable[[Any, int], None],
    qos: QoSProfile | int,
) -> Subscription:
    """Subscribe with `callback(msg, received_ns)`: received_ns is when DDS received the message
    (system clock, ns) where rclpy passes the message info, 0 where it cannot (Humble; or an rmw
    that gives no timestamp): the caller then takes the time its callback runs."""
    if subscriptions_pass_message_info():

        def with_info(msg: Any, info: dict[str, int]) -> None:
            callback(msg, info.get('received_timestamp', 0))

        return node.create_subscription(msg_type, topic, with_info, qos)
    return node.create_subscription(msg_type, topic, lambda msg: callback(msg, 0), qos)


class RemoteParameters:
    """Sets another node's parameters through its `set_parameters` service: what
    rclpy.parameter_client.AsyncParameterClient.set_parameters does on Jazzy and Kilted (Jazzy
    rclpy/parameter_client.py:174), which Humble's rclpy 3.3 does not have (added in 3.6)."""

    def __init__(self, node: Node, remote_node: str) -> None:
        from rcl_interfaces.srv import SetParameters

        self._request_type = SetParameters.Request
        service = f'/{remote_node.lstrip("/")}/set_parameters'
        self._client = node.create_client(SetParameters, service)

    @property
    def client(self) -> Any:
        """The set_parameters service client."""
        return self._client

    def service_is_ready(self) -> bool:
        return self._client.service_is_ready()

    def set_parameters(self, parameters: list[Parameter]) -> Future:
        """A future whose result has `.results` (rcl_interfaces/SetParametersResult), one per
        parameter, in order."""
        request = self._request_type(parameters=[p.to_parameter_msg() for p in parameters])
        return self._client.call_async(request)
