"""Where the executor's commands go. Each backend sends one (D,) command per tick, both arms,
once it is `ready`.

* `joint_positions`: per arm a sensor_msgs/JointState with the 6 arm joints and `gripper`
  (motor angle, rad) on robot.joint_positions_topic(arm); the MuJoCo simulation consumes it.
  Ready at once.
* `interbotix`: per arm a JointGroupCommand (name `arm`, 6 values) and a JointSingleCommand
  (name `gripper`, motor angle) for interbotix_xs_sdk. Ready only after the bring-up
  (runtime/arm_bringup.py) has called every xs_sdk service in order and read back what it set;
  a call that is not served or not answered within `bringup_timeout`, or a read-back that
  differs, stops the bring-up for good, with the reason, and nothing is ever commanded. A
  restarted driver (a new publisher of the arm's joint_states: xs_sdk came back, in its YAML's
  modes) makes it not ready until the bring-up has run again for that arm. Its message package
  is imported only when this backend is chosen, so the rest of the stack runs without it.

Both give the topics they command on (to find other publishers there) and torque_off (a no-op
in the simulation).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot
from oft_policy_node.ros_conversions import arm_command
from oft_policy_node.runtime.arm_bringup import (
    DriverCall,
    DriverSequence,
    follower_bringup,
    read_backs,
    torque_off,
)

COMMAND_QOS_DEPTH = 10
BRINGUP_POLL_S = 0.05
DRIVER_WATCH_S = 0.1  # how often the publishers of the arms' joint_states are looked at
# Wall seconds without an arm's joint states (xs_sdk publishes at 100 Hz) before the arm is
# not commanded until its driver's settings read back again.
DRIVER_GAP_S = 0.5


class JointPositionsBackend:
    ready = True
    brought_up = True
    failure: str | None = None
    status = 'ready'
    idle = True
    driver_restarts = 0

    def __init__(
        self, node: Node, params: Mapping[str, Any], gripper: robot.GripperCalibration
    ) -> None:
        del params  # the simulation needs no bring-up
        self._gripper = gripper
        self._publishers = {
            arm: node.create_publisher(
                JointState, robot.joint_positions_topic(arm), COMMAND_QOS_DEPTH
            )
            for arm in robot.ARMS
        }

    def command_topics(self) -> list[str]:
        return [publisher.topic_name for publisher in self._publishers.values()]

    def watch_driver(self, arm: str, joint_states_topic: str) -> None:
        del arm, joint_states_topic  # the simulation does not restart under the executor

    def joint_state_arrived(self, arm: str) -> None:
        pass

    def torque_off(self) -> None:
        pass  # simulated arms have no torque to switch off

    def send(self, command: np.ndarray, stamp: Time) -> None:
        for arm, publisher in self._publishers.items():
            joints, gripper = arm_command(command, arm, self._gripper)
            msg = JointState(name=[*robot.ARM_JOINTS, robot.GRIPPER], position=[*joints, gripper])
            msg.header.stamp = stamp
            publisher.publish(msg)


def _import_interbotix(kind: str) -> Any:
    try:
        return importlib.import_module(f'interbotix_xs_msgs.{kind}')
    except ImportError as error:
        raise RuntimeError(
            'backend "interbotix" needs the interbotix_xs_msgs package: source the '
            'Interbotix workspace (interbotix_ros_core) before starting the executor, or '
            'use backend:=joint_positions for the simulation'
        ) from error


class DriverCalls:
    """Makes a DriverSequence's xs_sdk service calls from `node`, one at a time, each within
    `timeout` seconds to appear and to answer; `step()` is polled on a wall-time timer (the
    driver answers in wall time, whatever clock the node runs on), logs each call answered as
    asked (with its read-back values) and returns it."""

    def __init__(self, node: Node, timeout: float) -> None:
        self._node = node
        self._services = _import_interbotix('srv')
        self._timeout = timeout
        self._clients: dict[str, Any] = {}
        self._future = None
        self._deadline = 0.0
        self.sequence = DriverSequence([])

    def start(self, sequence: DriverSequence) -> None:
        for call in sequence.calls:
            if call.name not in self._clients:
                self._clients[call.name] = self._node.create_client(
                    getattr(self._services, call.srv_type), call.name
                )
        self.sequence = sequence
        self._future = None
        self._deadline = time.monotonic() + self._timeout

    def step(self) -> DriverCall | None:
        """Issue or wait for the current call; the call once it was answered (the sequence has
        taken the answer: a read-back that differs has failed it)."""
        call = self.sequence.current
        if call is None:
            return None
        now = time.monotonic()
        if self._future is None:
            client = self._clients[call.name]
            if client.service_is_ready():
                self._future = client.call_async(client.srv_type.Request(**call.request))
                self._deadline = now + self._timeout
            elif now > self._deadline:
                namespace = call.name.rsplit('/', 1)[0]
                self.fail(
                    f'the service is not offered after {self._timeout} s (is xs_sdk '
                    f'running in namespace {namespace}?)'
                )
            return None
        if not self._future.done():
            if now > self._deadline:
                self.fail(f'no response within {self._timeout} s')
            return None
        error = self._future.exception()
        if error is not None:
            self.fail(f'the call raised {error!r}')
            return None
        values = list(getattr(self._future.result(), 'values', ()))
        self._future = None
        self._deadline = now + self._timeout
        self.sequence.answered(values)
        if not self.sequence.failure:
            self._node.get_logger().info(
                f'{self.sequence.purpose}: {call.describe()}'
                + (f' = {values}' if call.expect is not None else '')
            )
        return call

    def fail(self, reason: str) -> None:
        self.sequence.fail(reason)
        if self._future is not None:
            self._future.cancel()
        self._node.get_logger().error(self.sequence.failure)


class InterbotixBackend:
    """Commands for interbotix_xs_sdk, sent only while every arm's driver is known to hold the
    bring-up's settings: after the bring-up, and again after any sign of a driver restart. An
    arm whose joint states stop for DRIVER_GAP_S is not commanded until they return and the
    driver's registers read back as set (a restarted xs_sdk comes back in its YAML's modes: its
    gripper in linear_position would read a motor angle as metres); a read-back that differs
    brings that arm up again. A new publisher of an arm's joint states (a driver that restarted
    too fast to leave a gap) does the same."""

    def __init__(
        self, node: Node, params: Mapping[str, Any], gripper: robot.GripperCalibration
    ) -> None:
        messages = _import_interbotix('msg')
        self._node = node
        self._gripper = gripper
        self._group_type = messages.JointGroupCommand
        self._single_type = messages.JointSingleCommand
        self._publishers = {
            arm: (
                node.create_publisher(
                    self._group_type, robot.joint_group_topic(arm), COMMAND_QOS_DEPTH
                ),
                node.create_publisher(
                    self._single_type, robot.joint_single_topic(arm), COMMAND_QOS_DEPTH
                ),
            )
            for arm in robot.ARMS
        }
        self._current_limit = params['gripper_current_limit']
        self._calls = DriverCalls(node, params['bringup_timeout'])
        self._brought_up = False  # the first bring-up has finished
        self._torqued_off = False
        self._state_topics: dict[str, str] = {}
        self._driver_gids: dict[str, set[tuple[int, ...]]] = {}
        self._last_state = dict.fromkeys(robot.ARMS, 0.0)  # monotonic s of the newest state
        self._silent: set[str] = set()  # arms whose joint states stopped
        self._to_check: list[str] = []  # arms whose driver settings must be read back
        self._to_bring_up: list[str] = []  # arms whose driver must be brought up again
        self.driver_restarts = 0
        self._calls.start(DriverSequence(follower_bringup(self._current_limit)))
        # The driver answers in wall time whatever clock the node runs on (sim time stops).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(BRINGUP_POLL_S, self._step, clock=steady)
        node.create_timer(DRIVER_WATCH_S, self._watch, clock=steady)
        node.get_logger().info(f'bring-up of the arms: {len(self._sequence.calls)} xs_sdk calls')

    @property
    def _sequence(self) -> DriverSequence:
        return self._calls.sequence

    @property
    def ready(self) -> bool:
        return (
            self._brought_up
            and self._sequence.done
            and not (self._silent or self._to_check or self._to_bring_up)
            and not self._torqued_off
        )

    @property
    def brought_up(self) -> bool:
        return self._brought_up

    @property
    def idle(self) -> bool:
        """No driver call is under way (or the sequence failed)."""
        return self._sequence.done or self._sequence.failure is not None

    @property
    def failure(self) -> str | None:
        return self._sequence.failure

    @property
    def status(self) -> str:
        if self.failure:
            return self.failure
        if self._torqued_off:
            return 'torque off' if self.idle else f'torque off {self._sequence.progress}'
        call = self._sequence.current
        if call is not None:
            return f'{self._sequence.purpose} {self._sequence.progress}: {call.name}'
        if self._silent:
            return f'no joint states from {", ".join(sorted(self._silent))}: not commanding'
        return 'ready'

    def command_topics(self) -> list[str]:
        return [p.topic_name for pair in self._publishers.values() for p in pair]

    def watch_driver(self, arm: str, joint_states_topic: str) -> None:
        """Watch who publishes `arm`'s joint states (the resolved topic name)."""
        self._state_topics[arm] = joint_states_topic

    def joint_state_arrived(self, arm: str) -> None:
        self._last_state[arm] = time.monotonic()

    def torque_off(self) -> None:
        self._torqued_off = True
        self._calls.start(DriverSequence(torque_off(), 'torque off'))

    def _publisher_gids(self, arm: str) -> set[tuple[int, ...]]:
        topic = self._state_topics.get(arm)
        if topic is None:
            return set()
        return {tuple(i.endpoint_gid) for i in self._node.get_publishers_info_by_topic(topic)}

    def _busy_arms(self) -> set[str]:
        """Arms already silent, waiting for or under a driver sequence."""
        busy = {*self._silent, *self._to_check, *self._to_bring_up}
        if not self._sequence.done and self._sequence.calls:
            busy.add(self._sequence.calls[0].arm)
        return busy

    def _watch(self) -> None:
        """A publisher of an arm's joint states not seen when the arm was last brought up or
        checked: its driver (re)started."""
        if not self._brought_up or self._torqued_off or self.failure:
            return
        busy = self._busy_arms()
        for arm in self._state_topics:
            gids = self._publisher_gids(arm)
            if arm in busy or not gids:  # a driver that is gone: the joint states' gap
                continue
            if gids - self._driver_gids.get(arm, gids):
                self.driver_restarts += 1
                self._node.get_logger().warning(
                    f'{arm} arm: a new publisher of {self._state_topics[arm]}, its driver '
                    f'restarted: not commanding until it is brought up again'
                )
                self._queue(self._to_bring_up, arm)
            self._driver_gids[arm] = gids

    @staticmethod
    def _queue(arms: list[str], arm: str) -> None:
        if arm not in arms:
            arms.append(arm)

    def _watch_joint_states(self, now: float) -> None:
        """Arms whose joint states stopped are not commanded; when they come back, the
        driver's settings are read back before anything is."""
        for arm, last in self._last_state.items():
            silent = now - last > DRIVER_GAP_S
            if silent and arm not in self._silent:
                self._silent.add(arm)
                self._node.get_logger().warning(
                    f'{arm} arm: no joint states for {DRIVER_GAP_S} s: not commanding until '
                    f"they return and its driver reads back the bring-up's settings"
                )
            elif not silent and arm in self._silent:
                self._silent.discard(arm)
                self._queue(self._to_check, arm)

    def _next_sequence(self) -> None:
        if self._to_bring_up:
            arm = self._to_bring_up.pop(0)
            if arm in self._to_check:
                self._to_check.remove(arm)
            calls, purpose = follower_bringup(self._current_limit, (arm,)), f'{arm} bring-up again'
        elif self._to_check:
            arm = self._to_check.pop(0)
            calls, purpose = read_backs(self._current_limit, (arm,)), f'{arm} driver check'
        else:
            return
        self._node.get_logger().info(f'{purpose}: {len(calls)} xs_sdk calls')
        self._calls.start(DriverSequence(calls, purpose))

    def _step(self) -> None:
        if self._brought_up and not self._torqued_off and not self.failure:
            self._watch_joint_states(time.monotonic())
            if self._sequence.done:
                self._next_sequence()
        while (call := self._calls.step()) is not None:  # the next call at once, not a poll later
            self._answered(call)

    def _answered(self, call: DriverCall) -> None:
        logger, sequence = self._node.get_logger(), self._sequence
        if sequence.failure and sequence.purpose.endswith('driver check'):
            logger.warning(
                f'{sequence.failure.removesuffix("; nothing is commanded")}: the driver lost '
                f'the settings (restarted?); bringing the {call.arm} arm up again'
            )
            self.driver_restarts += 1
            self._calls.start(DriverSequence([]))  # done: the next step starts the bring-up
            self._queue(self._to_bring_up, call.arm)
            return
        if sequence.failure:
            logger.error(sequence.failure)
            return
        if sequence.done and sequence.purpose != 'torque off':
            self._brought_up = True
            for arm in {c.arm for c in sequence.calls}:  # the driver that now holds them
                self._driver_gids[arm] = self._publisher_gids(arm)
            logger.info(
                f'{sequence.purpose} done, read back: arms in position mode, grippers '
                f'current_based_position with Current_Limit {self._current_limit}, torque on'
            )

    def send(self, command: np.ndarray, stamp: Time) -> None:
        del stamp  # the Interbotix commands carry no header
        for arm, (group, single) in self._publishers.items():
            joints, gripper = arm_command(command, arm, self._gripper)
            group.publish(self._group_type(name='arm', cmd=joints))
            single.publish(self._single_type(name=robot.GRIPPER, cmd=gripper))


BACKENDS = {'joint_positions': JointPositionsBackend, 'interbotix': InterbotixBackend}
