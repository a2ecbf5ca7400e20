"""How far the step-limited command leads the measured MuJoCo arm: the evidence behind the
executor's tracking tolerances. The committed pot policy, 36 seeded episodes, policy and sim in
one process (no DDS, so a graph adds up to a tick of joint-state age); per joint the largest
lead and the largest lead held for 5 ticks in a row (what trips a tracking fault)."""

from __future__ import annotations

import numpy as np

from aloha_bringup.evaluation.episodes import episode_plans
from aloha_bringup.graph import default_checkpoint
from aloha_sim.layout_views import proprio
from aloha_sim.physics import AlohaSim
from oft_policy_node import robot
from oft_policy_node.model.policy import OftPolicy
from oft_policy_node.runtime.safety import SafetyFilter, SafetyLimits

SCENE = 'put_x_into_pot'
EPISODES_PER_INSTRUCTION = 12
MAX_SECONDS = 12.0
TRIP_TICKS = 5  # chunk_executor's tracking_error_ticks default


def run() -> dict:
    policy = OftPolicy.from_pretrained(default_checkpoint(SCENE)).eval()
    sim = AlohaSim(SCENE, 120, 160)
    # Tolerances out of the way: the lead itself is measured, nothing is clipped to it.
    safety = SafetyFilter(
        SafetyLimits.for_robot(robot.CONTROL_RATE_HZ, arm_tolerance=1e9, gripper_tolerance=1e9)
    )
    substeps = max(round(1.0 / robot.CONTROL_RATE_HZ / sim.timestep), 1)
    peak = np.zeros(robot.ACTION_DIM)
    sustained = np.zeros(robot.ACTION_DIM)
    try:
        for plan in episode_plans(sim.scene.instructions(), EPISODES_PER_INSTRUCTION, 0):
            sim.reset(plan.seed, plan.instruction)
            command = proprio(sim).astype(np.float64)
            leads = []  # (ticks, D) |step-limited target - measured|
            while sim.time < MAX_SECONDS and not sim.success():
                images = {c: sim.render(c) for c in policy.config.camera_names}
                for row in policy.predict_action_chunk(images, proprio(sim), plan.instruction):
                    filtered = safety.apply(row, command, proprio(sim).astype(np.float64))
                    leads.append(np.abs(filtered.tracking_error))
                    command = filtered.command
                    for arm in robot.ARMS:
                        joints = command[robot.arm_columns(arm)]
                        sim.set_command(
                            arm, np.r_[joints[:6], robot.normalized_to_motor(joints[6])]
                        )
                    sim.step(substeps)
            leads = np.array(leads)
            peak = np.maximum(peak, leads.max(axis=0))
            windows = np.lib.stride_tricks.sliding_window_view(leads, TRIP_TICKS, axis=0)
            sustained = np.maximum(sustained, windows.min(axis=-1).max(axis=0))
    finally:
        sim.close()
    names = robot.action_joint_names()
    return {
        'scene': SCENE,
        'episodes': 3 * EPISODES_PER_INSTRUCTION,
        'lead_peak_rad': dict(zip(names, np.round(peak, 3).tolist(), strict=True)),
        f'lead_for_{TRIP_TICKS}_ticks_rad': dict(
            zip(names, np.round(sustained, 3).tolist(), strict=True)
        ),
    }
