"""A ROS 2 service call that survives the service discovery race.

A request can reach a service before the service's reply writer has matched the client's reply
reader; Fast DDS then drops the reply (ros2/ros2#1253), and a client that waits for it waits
forever. `service_is_ready()` only says the request side matched. So the call is made again
when no reply came within `attempt_timeout`, as a person at a terminal would: only for requests
where answering twice does no harm (setting parameters, an instruction, a reset that is
followed by the episode it starts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ATTEMPTS = 5
ATTEMPT_TIMEOUT_S = 2.0


def call_until_answered(
    client: Any,
    send: Callable[[], Any],
    spin: Callable[[Callable[[], bool], float], bool],
    attempts: int = ATTEMPTS,
    attempt_timeout: float = ATTEMPT_TIMEOUT_S,
) -> Any:
    """`send()` makes the request (a future), `spin(done, timeout)` spins until `done()` or
    the timeout and says which; the response, or TimeoutError after `attempts` requests."""
    for _ in range(attempts):
        future = send()
        if spin(future.done, attempt_timeout):
            return future.result()
        client.remove_pending_request(future)
    raise TimeoutError(
        f'no reply from {client.srv_name} to {attempts} requests over '
        f'{attempts * attempt_timeout:.0f} s'
    )
