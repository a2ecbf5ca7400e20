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
from oft_policy_node.runtime.arm_bringup import GRIPPER_CURRENT_LIMIT
from oft_policy_node.runtime.chunk_queue import MERGE_RULES
from oft_policy_node.runtime.safety import ARM_TRACKING_TOLERANCE, GRIPPER_TRACKING_TOLERANCE

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
        'backend interbotix: the gripper current_limit register the bring-up sets '
        '(Trossen aloha: 300).',
        positive,
    ),
    ParameterSpec(
        'bringup_timeout',
        10.0,
        'backend interbotix: seconds each xs_sdk service of the bring-up may take to '
        'appear and to answer before the bring-up stops.',
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
