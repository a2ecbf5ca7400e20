"""chunk_executor's parameters, each declared once with its default, description and check
(`chunk_executor --help` prints them; docs/runtime.md explains the rules they set)."""

from __future__ import annotations

from oft_policy_node import robot
from oft_policy_node.command_backends import BACKENDS
from oft_policy_node.node_parameters import (
    ParameterSpec,
    fraction,
    non_negative,
    one_of,
    positive,
    positive_each,
)
from oft_policy_node.runtime.arm_bringup import GRIPPER_CURRENT_LIMIT, GRIPPER_CURRENT_LIMIT_MAX
from oft_policy_node.runtime.chunk_queue import MERGE_RULES, SPLICE_FADE
from oft_policy_node.runtime.pose_moves import EXIT_TIMEOUT
from oft_policy_node.runtime.safety import ARM_TRACKING_TOLERANCE, GRIPPER_TRACKING_TOLERANCE

EXIT_ACTIONS = ('sleep', 'hold')


def _pair(values: list[float]) -> str | None:
    return None if len(values) == 2 and values[0] != values[1] else 'must be [closed, open]'


def _opening(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else 'must be an opening in [0, 1]'


def _arm_pose(values: list[float]) -> str | None:
    return (
        None
        if len(values) == len(robot.ARM_JOINTS)
        else f'must list {len(robot.ARM_JOINTS)} joints'
    )


PARAMETERS = (
    ParameterSpec(
        'rate_hz',
        robot.CONTROL_RATE_HZ,
        'Control loop rate (Hz) on the node clock; also sets the per-tick step limit.',
        positive,
    ),
    ParameterSpec(
        'backend',
        'joint_positions',
        'Where commands go: "joint_positions" (sensor_msgs/JointState per arm, the '
        'simulation) or "interbotix" (JointGroupCommand + JointSingleCommand for '
        'interbotix_xs_sdk).',
        one_of(*BACKENDS),
    ),
    ParameterSpec(
        'merge_rule',
        'newest',
        'How overlapping chunks merge: "newest" (the newest observation wins), '
        '"blend" (weights exp(-blend_decay * age difference)), "commit" (play each '
        'chunk to its end, then the newest: OFT on ALOHA) or "sync" (play each '
        'chunk to its end, hold until a chunk observed after it lands, play that '
        'from its first row: no rows lost to a slow policy) or "prefix" (real-time '
        "chunking: switch to a chunk given the played chunk's rows at its first "
        'predicted row, no pause, no row skipped; needs a policy trained with '
        '--prefix-steps; publishes ~/committed).',
        one_of(*MERGE_RULES),
        read_only=False,
    ),
    ParameterSpec(
        'blend_decay',
        5.0,
        'Decay (1/s) of the blend weights by observation age; 0 = plain mean.',
        non_negative,
        read_only=False,
    ),
    ParameterSpec(
        'splice_fade',
        SPLICE_FADE,
        'prefix: seconds over which the step between the played chunk and the one '
        'switched to fades out (the new rows are shifted by it, the shift falling '
        'linearly to nothing); 0 = switch as predicted.',
        non_negative,
        read_only=False,
    ),
    ParameterSpec(
        'max_chunk_age',
        1.0,
        'Watchdog (s): a chunk whose observation is older than this, or that arrived '
        'longer ago on the executor clock, is never used; the executor holds the '
        'pose and counts stalls instead (sync: a chunk that began plays to its end).',
        positive,
        read_only=False,
    ),
    ParameterSpec(
        'velocity_scale',
        1.0,
        'Fraction (0, 1] of the vx300s velocity limits (pi rad/s arm, 4/s gripper '
        'opening) allowed per tick.',
        fraction,
    ),
    ParameterSpec(
        'max_future_stamp',
        0.1,
        'Chunks stamped more than this many seconds ahead of the executor clock are '
        'rejected whole (policy and robot clocks disagree).',
        non_negative,
    ),
    ParameterSpec(
        'max_joint_state_age',
        0.25,
        'Hold when an arm sent no joint state for this many seconds (node clock); '
        'following resumes on its own when states return and the arm is where it '
        'was held.',
        positive,
    ),
    ParameterSpec(
        'tracking_tolerance',
        [ARM_TRACKING_TOLERANCE] * len(robot.ARM_JOINTS),
        'Per arm joint (waist .. wrist_rotate, rad): commands stay within this of '
        'the measured pose; beyond it for tracking_error_ticks ticks is a tracking '
        'fault (hold, ERROR, wait for ~/resume).',
        positive_each,
    ),
    ParameterSpec(
        'gripper_tracking_tolerance',
        GRIPPER_TRACKING_TOLERANCE,
        'Gripper (normalised opening): only a command more open than the measured '
        'opening by more than this counts; closing on an object never does.',
        positive,
    ),
    ParameterSpec(
        'tracking_error_ticks',
        5,
        'Consecutive ticks beyond a tracking tolerance that trip the fault.',
        positive,
    ),
    ParameterSpec(
        'start_ramp_duration',
        2.0,
        'Seconds over which the velocity limit ramps up from zero after start-up, '
        '~/resume and stale joint states, so the first move is slow; 0 = none.',
        non_negative,
    ),
    ParameterSpec(
        'gripper_current_limit',
        GRIPPER_CURRENT_LIMIT,
        "backend interbotix: the grippers' Current_Limit (Dynamixel units of 2.69 mA, "
        f'1..{GRIPPER_CURRENT_LIMIT_MAX}) the bring-up writes with torque off and reads back '
        f"(ALOHA: {GRIPPER_CURRENT_LIMIT}, the value of Trossen's aloha_vx300s.yaml).",
        lambda value: (
            None
            if 0 < value <= GRIPPER_CURRENT_LIMIT_MAX
            else f'must be in 1..{GRIPPER_CURRENT_LIMIT_MAX}'
        ),
    ),
    ParameterSpec(
        'bringup_timeout',
        10.0,
        'backend interbotix: seconds each xs_sdk service of the bring-up may take to '
        'appear and to answer before the bring-up stops.',
        positive,
    ),
    ParameterSpec(
        'gripper_finger_range',
        [robot.ALOHA2_GRIPPER.finger_closed, robot.ALOHA2_GRIPPER.finger_open],
        'Observed finger position (m, joint left_finger) of a closed and an open gripper '
        "(the robot profile's; aloha2 by default).",
        _pair,
    ),
    ParameterSpec(
        'gripper_motor_range',
        [robot.ALOHA2_GRIPPER.motor_closed, robot.ALOHA2_GRIPPER.motor_open],
        'Commanded gripper motor angle (rad) of a closed and an open gripper.',
        _pair,
    ),
    ParameterSpec(
        'on_start',
        'auto',
        'After the bring-up: "start_pose" moves slowly to start_pose with the grippers at '
        'start_gripper before following the policy (as Trossen\'s scripts start), "stay" follows '
        'from where the arms are; "auto": start_pose with backend interbotix, stay in the '
        'simulation (its episodes start where the scene puts the arms).',
        one_of('auto', 'start_pose', 'stay'),
    ),
    ParameterSpec(
        'on_exit',
        'hold',
        'On Ctrl-C or SIGTERM: "hold" opens the grippers and holds the arms where they are, '
        'torque on (as Trossen\'s record and replay scripts end); "sleep" moves slowly to the '
        "start pose, then the sleep pose (Trossen's sleep script), and torques the arms off once "
        'they measure the sleep pose. Torque is never switched off anywhere else; a move that '
        'cannot finish (joint states stop, a tracking fault, exit_timeout) leaves the arms held.',
        one_of(*EXIT_ACTIONS),
    ),
    ParameterSpec(
        'start_pose',
        list(robot.START_ARM_POSE),
        'Start pose of each arm (rad: waist, shoulder, elbow, forearm_roll, wrist_angle, '
        "wrist_rotate); Trossen's START_ARM_POSE.",
        _arm_pose,
    ),
    ParameterSpec(
        'start_gripper', 1.0, 'Gripper opening at the start pose (0 closed .. 1 open).', _opening
    ),
    ParameterSpec(
        'sleep_pose',
        list(robot.SLEEP_ARM_POSE),
        "Sleep pose of each arm (rad), where it rests with torque off; Trossen's sleep pose.",
        _arm_pose,
    ),
    ParameterSpec(
        'sleep_gripper', 0.0, 'Gripper opening at the sleep pose (0 closed .. 1 open).', _opening
    ),
    ParameterSpec(
        'pose_move_speed',
        0.5,
        'Peak joint speed (rad/s; grippers: opening per s) of the moves to the start and '
        'sleep poses.',
        positive,
    ),
    ParameterSpec(
        'exit_timeout',
        EXIT_TIMEOUT,
        'Seconds the exit (on_exit sleep) may take; past it the executor leaves the arms held '
        'where they are, torque on.',
        positive,
    ),
    ParameterSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.', positive),
    ParameterSpec(
        'realtime_priority',
        50,
        'SCHED_FIFO priority (1-99) of the control loop thread; where the process may not '
        '(no CAP_SYS_NICE or rtprio limit) it runs at nice -10 and warns once; 0 = do not ask.',
        lambda value: None if 0 <= value <= 99 else 'must be an integer in 0..99',
    ),
)
