"""The chunk executor on a real ALOHA's driver, over real DDS: the xs_sdk stub
(tests/peers/xs_sdk_stub.py: the driver's services over a model of the servos' registers, built
from interbotix_xs_driver and the Dynamixel control tables) on both robot profiles.

* The bring-up writes the gripper Current_Limit with torque off, reads back every register and
  mode it set, and only then commands: first the measured pose, then a slow move to the start
  pose; a write that silently does nothing is caught by the read-back and nothing is commanded.
* A driver restarted in the middle of a run (in its YAML's modes again) is not commanded until
  the bring-up has run again for its arm.
* ~/sleep goes home, then to the sleep pose; the exit opens the grippers (hold) or sleeps and
  torques off once the arms rest there, never elsewhere.
* A second publisher on the command topics is reported and nothing is commanded beside it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from aloha_bringup.graph import CONFIG_DIR, resolve_graph
from aloha_bringup.robot_profile import load_profile
from oft_policy_node import robot
from oft_policy_node.runtime.arm_bringup import (
    CURRENT_LIMIT,
    MODE_VALUES,
    follower_bringup,
    read_backs,
)
from oft_policy_node.runtime.pose_moves import both_arms
from tests.runtime_rig import PERIOD, POSE, ExecutorRig, chunk_message

pytestmark = pytest.mark.ros
PROFILES = ('aloha2', 'aloha1')
# Where the arms stand at power-on in these tests: folded, grippers closed, inside the limits.
REST = both_arms([0.0, -1.7, 1.5, 0.0, 0.6, 0.0], 0.0)


class Robot:
    """A chunk_executor configured as `ros2 launch ... robot:=<profile>` configures it (the
    resolved graph's parameters and remappings), beside one xs_sdk stub per arm."""

    def __init__(self, context, monkeypatch, profile: str = 'aloha2', **params) -> None:
        from rclpy.parameter import Parameter

        from tests.interface_build import load_test_interface

        load_test_interface('interbotix_xs_msgs', monkeypatch)
        from oft_policy_node.chunk_executor import ChunkExecutor
        from oft_policy_node.executor_parameters import PARAMETERS
        from tests.peers.xs_sdk_stub import XsSdkStub

        self.context = context
        self.profile = load_profile(profile, CONFIG_DIR)
        spec = {
            n.name: n
            for n in resolve_graph(
                {'robot': profile, 'use_sim': 'false', 'backend': 'interbotix', 'checkpoint': '/c'}
            )
        }['chunk_executor']
        known = {p.name for p in PARAMETERS}
        values = {
            **{k: v for k, v in spec.parameters.items() if k in known},
            'merge_rule': 'sync',
            'diagnostics_period': 0.2,
            'realtime_priority': 0,
            'pose_move_speed': 1.5,  # the tests' moves quicker; the first test checks the default
            **params,
        }
        remaps = [word for a, b in spec.remappings for word in ('-r', f'{a}:={b}')]
        self.node = ChunkExecutor(
            context=context,
            parameter_overrides=[
                Parameter('use_sim_time', value=True),
                *(Parameter(k, value=v) for k, v in values.items()),
            ],
            cli_args=['--ros-args', *remaps],
        )
        self.rig = ExecutorRig(context, self.node, follow=False)
        self.stubs = {
            arm: XsSdkStub(
                context,
                REST,
                arms=(arm,),
                arm_namespaces=self.profile.arm_namespaces,
                gripper=self.profile.gripper,
                **self.stub_options(arm),
            )
            for arm in robot.ARMS
        }
        for stub in self.stubs.values():
            self.rig.executor.add_node(stub)

    def stub_options(self, arm: str) -> dict:
        return {}

    def run(self, seconds: float) -> None:
        """Let `seconds` of wall time pass with /clock ticking at 25 Hz."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.step()

    def step(self) -> None:
        self.rig.now_ns += 40_000_000
        self.rig.publish_clock()
        self.rig.spin_until(lambda: False, timeout=0.04)

    def run_until(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.step()
        return predicate()

    def state(self) -> str:
        return self.rig.diagnostics[-1]['message'] if self.rig.diagnostics else ''

    def restart(self, arm: str, gap: float) -> object:
        """The arm's xs_sdk goes away and, `gap` s later, starts again over the same servos."""
        old = self.stubs[arm]
        self.rig.executor.remove_node(old)
        pose, servos, options = old.pose, old.servos, old._options
        old.destroy_node()
        self.run(gap)
        from tests.peers.xs_sdk_stub import XsSdkStub

        new = XsSdkStub(self.context, pose, servos=servos, **options)
        self.stubs[arm] = new
        self.rig.executor.add_node(new)
        return new

    def close(self) -> None:
        for stub in self.stubs.values():
            self.rig.executor.remove_node(stub)
            stub.destroy_node()
        self.rig.close()


@pytest.fixture
def make_robot(rclpy_context, monkeypatch):
    robots = []

    def make(profile: str = 'aloha2', **params) -> Robot:
        robots.append(Robot(rclpy_context, monkeypatch, profile, **params))
        return robots[-1]

    yield make
    for made in robots:
        made.close()


def calls_by_arm(made: Robot) -> list[tuple[str, dict]]:
    calls = [(t, name, fields) for stub in made.stubs.values() for t, name, fields in stub.calls]
    return [(name, fields) for _, name, fields in sorted(calls, key=lambda c: c[0])]


def namespaced(made: Robot, calls: list) -> list[tuple[str, dict]]:
    return [
        (
            call.name.replace(
                f'/{robot.arm_namespace(call.arm)}/', f'/{made.profile.arm_namespaces[call.arm]}/'
            ),
            call.request,
        )
        for call in calls
    ]


@pytest.mark.parametrize('profile', PROFILES)
def test_the_bringup_sets_the_current_limit_reads_it_back_then_moves_slowly_to_the_start_pose(
    make_robot, profile
):
    made = make_robot(profile, pose_move_speed=0.5)  # the default
    limit = made.profile.gripper_current_limit
    start = both_arms(made.profile.start_pose, made.profile.start_gripper)
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0), made.rig.diagnostics
    # The order of calls per arm is that of follower_bringup (both stubs interleave in time).
    for arm, stub in made.stubs.items():
        seen = [(name, fields) for _, name, fields in stub.calls]
        assert seen == namespaced(made, follower_bringup(limit, (arm,))), seen
        registers = stub.servos[arm].registers
        assert registers['gripper'][CURRENT_LIMIT] == limit
        assert registers['gripper']['Operating_Mode'] == MODE_VALUES['current_based_position']
        assert registers['gripper']['Goal_Current'] == limit  # set by the mode switch after it
        assert all(registers[j]['Operating_Mode'] == 3 for j in robot.ARM_JOINTS)
        assert all(servo['Torque_Enable'] == 1 for servo in registers.values())
        assert stub.servos[arm].rejected_writes == []  # every write the driver passed on took
        assert stub.misread_commands == []
        first_command = min(t for t, *_ in stub.commands)
        assert first_command > max(t for t, *_ in stub.calls)  # after the last read-back
        # The first command is the measured pose; the last, the start pose.
        columns = robot.arm_columns(arm)
        np.testing.assert_allclose(stub.group_commands(arm)[0], REST[columns][:6], atol=1e-6)
        np.testing.assert_allclose(stub.group_commands(arm)[-1], start[columns][:6], atol=1e-6)
        opening = made.profile.gripper.motor_to_normalized(stub.gripper_commands(arm))
        assert opening[0] == pytest.approx(0.0, abs=1e-6)
        assert opening[-1] == pytest.approx(made.profile.start_gripper, abs=1e-6)
        speeds = np.abs(np.diff(stub.group_commands(arm), axis=0)).max(axis=1) / PERIOD
        assert speeds.max() <= 0.5 + 1e-6  # pose_move_speed, rad/s
    print(
        f'\n{profile}: {len(made.stubs["left"].calls)} xs_sdk calls per arm, Current_Limit '
        f'{limit} read back, start pose reached in {made.node._core.move_ticks * PERIOD:.2f} s '
        f'of sim time at peak {speeds.max():.3f} rad/s'
    )


class SilentWrites(Robot):
    def stub_options(self, arm: str) -> dict:
        return {'ignore_writes': True}


def test_a_register_write_that_silently_does_nothing_is_caught_and_nothing_is_commanded(
    rclpy_context, monkeypatch
):
    """xs_sdk answers set_motor_registers whatever happened to the write: a limit other than
    the one the driver's YAML wrote reads back wrong."""
    made = SilentWrites(rclpy_context, monkeypatch, 'aloha2', gripper_current_limit=300)
    try:
        assert made.run_until(lambda: 'ERROR' in {r['level'] for r in made.rig.diagnostics})
        report = [r for r in made.rig.diagnostics if r['level'] == 'ERROR'][-1]
        assert 'read back single gripper Current_Limit = [200], expected 300' in report['message']
        assert 'nothing is commanded' in report['message']
        made.run(0.5)
        assert all(stub.commands == [] for stub in made.stubs.values())
        response = made.rig.call('/chunk_executor/resume')
        assert not response.success and 'read back' in response.message
        assert not made.rig.call('/chunk_executor/go_to_start').success
    finally:
        made.close()


def test_trossens_own_current_limit_call_would_not_land_on_the_stub():
    """The stub holds to the sources: a lowercase name is no item, and Current_Limit is EEPROM,
    refused with torque on (Trossen's opening_ceremony writes right after a mode switch)."""
    from tests.peers.xs_sdk_stub import ServoBank

    bank = ServoBank()
    bank.registers['gripper']['Torque_Enable'] = 1
    assert not bank.write('gripper', 'current_limit', 300)
    assert not bank.write('gripper', 'Current_Limit', 300)
    bank.registers['gripper']['Torque_Enable'] = 0
    assert bank.write('gripper', 'Current_Limit', 300)
    assert bank.read('gripper', 'current_limit') is None


@pytest.mark.parametrize('gap', [1.0, 0.0], ids=['with a gap in its joint states', 'at once'])
def test_a_driver_restarted_mid_run_is_not_commanded_until_brought_up_again(make_robot, gap):
    made = make_robot('aloha2')
    limit = made.profile.gripper_current_limit
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    right_calls = len(made.stubs['right'].calls)
    new = made.restart('left', gap)
    assert new.modes['left']['gripper'] == 'linear_position'  # the YAML's mode again
    assert made.run_until(
        lambda: (
            int(made.rig.diagnostics[-1]['driver_restarts']) == 1
            and made.state() == 'running'
            and len(new.commands) > 10
        ),
        timeout=30.0,
    ), made.rig.diagnostics[-1]
    seen = [(name, fields) for _, name, fields in new.calls]
    # After a gap in its joint states the driver's settings are read back: its Current_Limit
    # is the YAML's (the same), its gripper mode is not, so the arm is brought up again. A
    # restart too quick for a gap is noticed by its new DDS endpoint, which may come first.
    checks = namespaced(made, read_backs(limit, ('left',)))[:2]
    if gap:
        assert seen[:2] == checks
    if seen[:2] == checks:
        seen = seen[2:]
    assert seen == namespaced(made, follower_bringup(limit, ('left',)))
    assert len(made.stubs['right'].calls) == right_calls  # the other arm is left alone
    assert new.modes['left']['gripper'] == 'current_based_position'
    brought_up = max(t for t, *_ in new.calls)
    if gap:  # its joint states stopped first: nothing reached it before its bring-up
        assert min(t for t, *_ in new.commands) > brought_up
        assert new.misread_commands == []
    else:  # a new endpoint is seen within DRIVER_WATCH_S; what came before is the window
        assert [c for t, _, kind, c in new.commands if kind == 'single' and t > brought_up]
    window = len([t for t, *_ in new.commands if t < brought_up])
    assert int(made.rig.diagnostics[-1]['driver_restarts']) == 1
    print(
        f'\nrestart ({gap} s gap): {len(new.calls)} calls to the new driver; commands before '
        f'its bring-up: {window}, gripper commands read as metres: {len(new.misread_commands)}'
    )


def moved(made: Robot, moves: int) -> bool:
    """Whether the executor has finished `moves` pose moves (the start pose is the first) and
    says it holds."""
    return made.node._core.moves_done == moves and made.state() == 'stopped'


def test_sleep_goes_home_first_then_exit_torques_off_only_at_rest(make_robot):
    made = make_robot('aloha2', on_exit='sleep', exit_timeout=120.0)
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    assert made.rig.call('/chunk_executor/sleep').success
    assert made.run_until(lambda: moved(made, 2), timeout=60.0)
    left = made.stubs['left'].group_commands('left')
    start, sleep = made.profile.start_pose, made.profile.sleep_pose
    # Home (the start pose) is passed through; the sleep pose is reached as the servos'
    # position limits clamp it (shoulder -1.85, elbow 1.606, wrist_angle -1.868).
    assert np.isclose(left, start, atol=1e-6).all(axis=1).any()
    clamped = np.clip(sleep, *[np.array(b)[:6] for b in robot.action_limits()])
    np.testing.assert_allclose(left[-1], clamped, atol=1e-6)
    assert made.stubs['left'].servos['left'].registers['shoulder']['Torque_Enable'] == 1
    assert made.rig.call('/chunk_executor/go_to_start').success
    assert made.run_until(lambda: moved(made, 3), timeout=60.0)
    np.testing.assert_allclose(made.stubs['left'].group_commands('left')[-1], start, atol=1e-6)
    assert made.rig.call('/chunk_executor/resume').success

    made.node.begin_exit()  # what Ctrl-C does (node_runner)
    assert made.run_until(made.node.exit_done, timeout=60.0)
    for arm, stub in made.stubs.items():
        assert all(servo['Torque_Enable'] == 0 for servo in stub.servos[arm].registers.values())
        np.testing.assert_allclose(stub.group_commands(arm)[-1], clamped, atol=1e-6)


def test_the_exit_never_torques_off_an_arm_that_is_not_at_rest(make_robot):
    """A sleep move whose arm is held up (here: the driver stops reporting it) ends with the
    arms held and torque on."""
    made = make_robot('aloha2', on_exit='sleep', exit_timeout=3.0)
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    made.node.begin_exit()
    made.run(0.5)
    made.rig.executor.remove_node(made.stubs['left'])  # its joint states stop mid-move
    assert made.run_until(made.node.exit_done, timeout=30.0)
    for arm, stub in made.stubs.items():
        assert all(servo['Torque_Enable'] == 1 for servo in stub.servos[arm].registers.values())
    made.rig.executor.add_node(made.stubs['left'])


def test_the_default_exit_opens_the_grippers_and_holds(make_robot):
    made = make_robot('aloha1')  # its grippers start closed
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    held = {arm: stub.group_commands(arm)[-1] for arm, stub in made.stubs.items()}
    made.node.begin_exit()
    assert made.run_until(made.node.exit_done, timeout=30.0)
    for arm, stub in made.stubs.items():
        opening = made.profile.gripper.motor_to_normalized(stub.gripper_commands(arm)[-1])
        assert opening == pytest.approx(1.0)
        np.testing.assert_allclose(stub.group_commands(arm)[-1], held[arm], atol=1e-9)
        assert stub.servos[arm].registers['gripper']['Torque_Enable'] == 1


def test_a_second_publisher_on_the_command_topics_stops_the_executor(make_robot):
    """Trossen's teleop left running beside the policy: reported, nothing commanded beside it,
    and nothing again until ~/resume once it has gone."""
    import interbotix_xs_msgs.msg as messages
    from rclpy.node import Node

    made = make_robot('aloha2')
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    made.rig.publish_chunk(chunk_message(made.rig.now, np.tile(POSE, (25, 1))), accepted=None)
    teleop = Node('dual_side_teleop', context=made.context)
    teleop.create_publisher(messages.JointGroupCommand, '/follower_left/commands/joint_group', 10)
    made.rig.executor.add_node(teleop)
    assert made.run_until(lambda: made.rig.diagnostics[-1]['level'] == 'ERROR')
    message = made.rig.diagnostics[-1]['message']
    assert 'another publisher on the command topics' in message
    assert '/follower_left/commands/joint_group: /dual_side_teleop' in message
    count = len(made.stubs['left'].commands)
    made.run(1.0)
    assert len(made.stubs['left'].commands) == count  # nothing beside it
    assert not made.rig.call('/chunk_executor/resume').success
    made.rig.executor.remove_node(teleop)
    teleop.destroy_node()
    assert made.run_until(lambda: made.rig.diagnostics[-1]['level'] == 'WARN')
    assert 'another node commanded the arms' in made.state()
    made.run(0.5)
    assert len(made.stubs['left'].commands) == count  # not even the old pose: it moved
    assert made.rig.call('/chunk_executor/resume').success
    assert made.run_until(lambda: len(made.stubs['left'].commands) > count)


def test_a_missing_xs_sdk_service_stops_the_bringup_and_nothing_is_commanded(
    rclpy_context, monkeypatch
):
    class Missing(Robot):
        def stub_options(self, arm: str) -> dict:
            return {'omit': ('set_motor_registers',)}

    made = Missing(rclpy_context, monkeypatch, bringup_timeout=1.0)
    try:
        assert made.run_until(lambda: 'ERROR' in {r['level'] for r in made.rig.diagnostics})
        report = [r for r in made.rig.diagnostics if r['level'] == 'ERROR'][-1]
        assert (
            'bring-up stopped at 4/24, /follower_left/set_motor_registers' in report['message']
        ), report
        assert 'the service is not offered after 1.0 s' in report['message']
        assert [name for _, name, _ in made.stubs['left'].calls] == [
            '/follower_left/reboot_motors',
            '/follower_left/set_operating_modes',
            '/follower_left/torque_enable',
        ]
        assert all(stub.commands == [] for stub in made.stubs.values())
        response = made.rig.call('/chunk_executor/resume')
        assert not response.success and 'bring-up stopped' in response.message
    finally:
        made.close()


def test_after_the_start_pose_the_first_move_to_the_policy_ramps_up(make_robot):
    """on_start stay: from the measured pose, a target 1 rad away, the speed limit ramps up
    over start_ramp_duration (tick n moves at most n/50 of pi rad/s)."""
    made = make_robot('aloha2', on_start='stay', start_ramp_duration=2.0)
    assert made.run_until(lambda: made.state() == 'running', timeout=60.0)
    stub = made.stubs['left']
    target = REST.copy()
    for arm in robot.ARMS:  # 1 rad on every joint, inside the limits
        target[robot.arm_columns(arm)][:6] += [1.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    made.rig.publish_chunk(chunk_message(made.rig.now, np.tile(target, (60, 1))))
    start = len(stub.group_commands('left'))
    for _ in range(60):  # at the robot's pace: joint states arrive between the ticks
        before = len(stub.group_commands('left'))
        made.step()
        assert made.rig.spin_until(lambda n=before: len(stub.group_commands('left')) > n)
        if np.allclose(stub.group_commands('left')[-1], target[:6], atol=1e-5):
            break
    left = stub.group_commands('left')[start - 1 :]
    speeds = np.abs(np.diff(left, axis=0)).max(axis=1) / PERIOD
    assert (len(left) - 1) * PERIOD == pytest.approx(1.12)
    np.testing.assert_allclose(speeds[:27], math.pi * np.arange(1, 28) / 50, rtol=1e-4)


def test_teleop_frees_the_leader_arms_then_mirrors_them(rclpy_context, monkeypatch):
    """Trossen's opening ceremony leaves the leaders in position mode with torque off: the
    teleop node does that through their xs_sdk, reads it back, and only then sends chunks."""
    from rclpy.parameter import Parameter

    from tests.interface_build import load_test_interface

    load_test_interface('interbotix_xs_msgs', monkeypatch)
    from aloha_bringup.teleop_node import TeleopNode
    from oft_msgs.msg import ActionChunk
    from oft_policy_node.runtime.arm_bringup import leader_bringup
    from tests.peers.xs_sdk_stub import XsSdkStub

    leaders = {arm: f'leader_{arm}' for arm in robot.ARMS}
    stub = XsSdkStub(rclpy_context, REST, arm_namespaces=leaders, gripper=robot.ALOHA2_GRIPPER)
    teleop = TeleopNode(
        context=rclpy_context, parameter_overrides=[Parameter('output_dir', value='/tmp/x')]
    )
    rig = ExecutorRig(rclpy_context, teleop, follow=False)
    rig.executor.add_node(stub)
    chunks = []
    rig.node.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, chunks.append, 10)
    try:
        assert rig.spin_until(lambda: teleop.leaders_ready, timeout=30.0)
        seen = [(name, fields) for _, name, fields in stub.calls]
        assert seen == [(c.name, c.request) for c in leader_bringup()]
        for arm in robot.ARMS:
            registers = stub.servos[arm].registers
            assert all(servo['Torque_Enable'] == 0 for servo in registers.values())
            assert registers['gripper']['Operating_Mode'] == 3
        # the stub publishes the leaders' states (its gripper a follower angle: any angle will
        # do here); chunks follow now that the leaders are free
        assert rig.spin_until(lambda: len(chunks) >= 3, timeout=30.0)
        rows = np.asarray(chunks[-1].actions).reshape(chunks[-1].num_steps, robot.ACTION_DIM)
        np.testing.assert_allclose(rows[0][:6], REST[:6], atol=1e-6)
    finally:
        rig.executor.remove_node(stub)
        stub.destroy_node()
        rig.close()
