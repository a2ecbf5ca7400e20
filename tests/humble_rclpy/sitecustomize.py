"""Makes the installed rclpy (Jazzy or Kilted) give the nodes what Humble's rclpy 3.3 gives them,
for the tests of the Humble fallback (no Humble wheels exist). Put this folder on PYTHONPATH
and every Python process started with it, every node of a graph included, runs so:

* subscription callbacks are called with the message alone, as Humble's executor does
  (ros2/rclpy humble rclpy/executors.py:353-362: `_take_subscription` keeps `msg_info[0]`,
  `await_or_execute(sub.callback, msg)`): a callback that needs (msg, info) raises TypeError
  on its first message, as it would on Humble;
* oft_policy_node.rclpy_compat is told so (on Humble it finds no Subscription.CallbackType;
  here the class must keep it, the installed executor dispatches by it);
* `rclpy.parameter_client` does not import (added in rclpy 3.6, after Humble's 3.3) and
  `rclpy.subscription.MessageInfo` is gone (Kilted only).
"""

from __future__ import annotations

import sys

try:
    import rclpy.subscription
    from rclpy.node import Node
except ImportError:  # a process without ROS 2 (colcon, a tool): nothing to change
    pass
else:
    _create_subscription = Node.create_subscription

    def _create_humble_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        def humble_dispatch(msg):  # one argument: the installed rclpy passes the message only
            return callback(msg)

        return _create_subscription(self, msg_type, topic, humble_dispatch, qos_profile, **kwargs)

    Node.create_subscription = _create_humble_subscription
    sys.modules['rclpy.parameter_client'] = None  # ImportError on import, as on Humble
    if hasattr(rclpy.subscription, 'MessageInfo'):
        del rclpy.subscription.MessageInfo

    try:
        from oft_policy_node import rclpy_compat
    except ImportError:
        pass
    else:
        rclpy_compat.subscriptions_pass_message_info = lambda: False
