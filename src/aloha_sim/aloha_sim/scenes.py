"""The simulated scenes: MuJoCo models built from gym-aloha's shipped ALOHA assets, seeded
object placements, instructions and success checks.

Each scene starts from gym-aloha's joint-space MJCF (the two ViperX 300 S arms on the table),
then `mujoco.MjSpec` adds what the stack needs: the three cameras of the real ALOHA
(`cam_high`, `cam_left_wrist`, `cam_right_wrist`), a `grasp` site between the fingers of each
gripper (the point the scripted demonstrators steer) and, for `put_x_into_pot`, a pot and three
vegetables.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

import mujoco
import numpy as np
from gym_aloha.constants import ASSETS_DIR
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from oft_policy_node import robot

# gym-aloha names the arms vx300s_left / vx300s_right.
MJ_ARM_PREFIX = {'left': 'vx300s_left', 'right': 'vx300s_right'}
TABLE_HEIGHT = 0.0  # m, z of the table top in the gym-aloha scene
# The grasp point, in the gripper_link frame: where a held object's centre ends up (measured).
GRASP_OFFSET = (0.135, 0.0, -0.008)
# Wrist camera on top of the gripper, looking forward and down at the fingers, like the real
# ALOHA's wrist-mounted RealSense. Position and look-at point in the gripper_link frame.
WRIST_CAMERA_POS = (0.05, 0.0, 0.08)
WRIST_CAMERA_TARGET = (0.2, 0.0, -0.02)
WRIST_CAMERA_FOVY = 80.0  # deg
HIGH_CAMERA_POS = (0.0, 0.45, 0.85)
HIGH_CAMERA_TARGET = (0.0, 0.6, 0.0)
HIGH_CAMERA_FOVY = 70.0  # deg

# Contact parameters of gym-aloha's objects, so our objects grip like its cube and peg.
OBJECT_CONTACT = {
    'condim': 4,
    'solimp': [0.99, 0.99, 0.01, 0.5, 2.0],
    'solref': [0.01, 1.0],
    'friction': [1.0, 0.005, 0.0001],
}


def camera_xyaxes(
    pos: tuple[float, ...], target: tuple[float, ...], up: tuple[float, ...] = (0.0, 0.0, 1.0)
) -> list[float]:
    """MuJoCo `xyaxes` of a camera at `pos` looking at `target` (a camera looks along its -z)."""
    forward = np.subtract(target, pos, dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: any right will do
        right = np.cross(forward, (0.0, 1.0, 0.0))
    right /= np.linalg.norm(right)
    image_up = np.cross(right, forward)
    return [*right, *image_up]


@dataclass(frozen=True)
class PotItem:
    """One vegetable of `put_x_into_pot`: a coloured capsule lying along the world x axis."""

    name: str
    rgba: tuple[float, float, float, float]
    radius: float  # m
    half_length: float  # m, of the cylindrical part


POT_ITEMS = (
    PotItem('green pepper', (0.15, 0.6, 0.15, 1.0), 0.022, 0.018),
    PotItem('red pepper', (0.8, 0.1, 0.1, 1.0), 0.022, 0.018),
    PotItem('yellow corn', (0.95, 0.8, 0.15, 1.0), 0.018, 0.04),
)
POT_INNER_RADIUS = 0.08  # m
POT_WALL_HEIGHT = 0.07  # m
POT_WALL_THICKNESS = 0.008  # m
POT_WALL_SEGMENTS = 16


def body_name(item: PotItem) -> str:
    return item.name.replace(' ', '_')


@dataclass(frozen=True)
class Layout:
    """Where a scene's objects start: body name -> (x, y, z) in metres (world frame)."""

    positions: dict[str, tuple[float, float, float]] = field(default_factory=dict)


class Scene:
    """A task: its MJCF, its random layout, its instructions, its success test."""

    name: str = ''
    xml_file: str = 'bimanual_viperx_transfer_cube.xml'
    default_instruction: str = ''
    episode_seconds: float = 10.0  # what a scripted demo of this scene needs

    def build_spec(self) -> mujoco.MjSpec:
        spec = mujoco.MjSpec.from_file(str(ASSETS_DIR / self.xml_file))
        add_robot_extras(spec)
        self.add_objects(spec)
        for key in list(spec.keys):  # the MJCF keyframes no longer match once objects change
            spec.delete(key)
        return spec

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        """Add the scene's own bodies (gym-aloha's MJCF already has them unless overridden)."""

    def instructions(self) -> tuple[str, ...]:
        return (self.default_instruction,)

    def check_instruction(self, instruction: str) -> str:
        """The canonical form of `instruction`, or ValueError naming the accepted ones."""
        text = ' '.join(instruction.strip().lower().split())
        if text not in self.instructions():
            close = difflib.get_close_matches(text, self.instructions(), n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            raise ValueError(
                f'instruction {instruction!r} is not one of scene {self.name!r}: '
                f'{list(self.instructions())}.{hint}'
            )
        return text

    def sample_layout(self, seed: int) -> Layout:
        raise NotImplementedError

    def target_object(self, instruction: str) -> str:
        """The layout object the instruction has the robot reach for first."""
        raise NotImplementedError

    def apply_layout(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> None:
        """Put every free body of the layout at its position, upright, at rest."""
        for name, pos in layout.positions.items():
            joint = model.body(name).jntadr[0]
            adr = model.jnt_qposadr[joint]
            data.qpos[adr : adr + 7] = (*pos, 1.0, 0.0, 0.0, 0.0)
            data.qvel[model.jnt_dofadr[joint] : model.jnt_dofadr[joint] + 6] = 0.0

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, instruction: str) -> bool:
        raise NotImplementedError


def contact_pairs(model: mujoco.MjModel, data: mujoco.MjData) -> set[tuple[str, str]]:
    """Names of the geom pairs in contact, both orders."""
    pairs = set()
    for contact in data.contact[: data.ncon]:
        a, b = model.geom(contact.geom1).name, model.geom(contact.geom2).name
        pairs.update({(a, b), (b, a)})
    return pairs


class TransferCube(Scene):
    """gym-aloha's transfer cube: the right arm picks the red cube and hands it to the left."""

    name = 'transfer_cube'
    xml_file = 'bimanual_viperx_transfer_cube.xml'
    default_instruction = 'transfer the red cube to the left arm'
    episode_seconds = 8.0

    def sample_layout(self, seed: int) -> Layout:
        return Layout({'box': tuple(float(v) for v in sample_box_pose(seed)[:3])})

    def target_object(self, instruction: str) -> str:
        self.check_instruction(instruction)
        return 'box'

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, instruction: str) -> bool:
        # gym-aloha's full reward: held by the left gripper and off the table.
        pairs = contact_pairs(model, data)
        return ('red_box', 'vx300s_left/10_left_gripper_finger') in pairs and (
            'red_box',
            'table',
        ) not in pairs


class Insertion(Scene):
    """gym-aloha's insertion: left holds the socket, right inserts the peg until it touches
    the pin inside."""

    name = 'insertion'
    xml_file = 'bimanual_viperx_insertion.xml'
    default_instruction = 'insert the peg into the socket'
    episode_seconds = 10.0

    def sample_layout(self, seed: int) -> Layout:
        peg, socket = sample_insertion_pose(seed)
        return Layout(
            {
                'peg': tuple(float(v) for v in peg[:3]),
                'socket': tuple(float(v) for v in socket[:3]),
            }
        )

    def target_object(self, instruction: str) -> str:
        self.check_instruction(instruction)
        return 'peg'

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, instruction: str) -> bool:
        return ('red_peg', 'pin') in contact_pairs(model, data)


class PutXIntoPot(Scene):
    """A pot and three vegetables at seeded random places; the instruction names the one that
    must end up inside the pot."""

    name = 'put_x_into_pot'
    default_instruction = f'put {POT_ITEMS[0].name} into pot'
    episode_seconds = 9.0
    pot_x_range = (-0.06, 0.06)
    pot_y_range = (0.66, 0.72)
    item_x_range = (-0.22, 0.22)
    item_y_range = (0.42, 0.56)
    min_item_gap = 0.1  # m between item centres
    min_item_x = 0.06  # |x| >= this: each item is clearly on one arm's side

    def instructions(self) -> tuple[str, ...]:
        return tuple(f'put {item.name} into pot' for item in POT_ITEMS)

    def target_item(self, instruction: str) -> PotItem:
        text = self.check_instruction(instruction)
        match = re.fullmatch(r'put (.+) into pot', text)
        return next(item for item in POT_ITEMS if match and item.name == match.group(1))

    def target_object(self, instruction: str) -> str:
        return body_name(self.target_item(instruction))

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        spec.delete(spec.body('box'))  # the MJCF's cube is not part of this scene
        pot = spec.worldbody.add_body(name='pot', pos=[0.0, 0.65, TABLE_HEIGHT], mocap=True)
        rgba = [0.55, 0.57, 0.6, 1.0]
        pot.add_geom(
            name='pot_bottom',
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=[POT_INNER_RADIUS + POT_WALL_THICKNESS, 0.003, 0],
            pos=[0, 0, 0.003],
            rgba=rgba,
        )
        ring = POT_INNER_RADIUS + POT_WALL_THICKNESS / 2
        half_width = ring * math.tan(math.pi / POT_WALL_SEGMENTS) + 0.002
        for k in range(POT_WALL_SEGMENTS):
            angle = 2 * math.pi * k / POT_WALL_SEGMENTS
            pot.add_geom(
                name=f'pot_wall_{k}',
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[POT_WALL_THICKNESS / 2, half_width, POT_WALL_HEIGHT / 2],
                pos=[ring * math.cos(angle), ring * math.sin(angle), POT_WALL_HEIGHT / 2],
                quat=[math.cos(angle / 2), 0, 0, math.sin(angle / 2)],
                rgba=rgba,
            )
        for item in POT_ITEMS:
            body = spec.worldbody.add_body(name=body_name(item), pos=[0, 0.5, item.radius])
            # gym-aloha's compiler takes inertia only from geom groups 4-5: give it explicitly,
            # like its cube (50 g) and peg.
            body.explicitinertial = True
            body.ipos = [0.0, 0.0, 0.0]
            body.mass = 0.05
            body.inertia = [2e-5, 2e-5, 2e-5]
            body.add_freejoint(name=f'{body_name(item)}_joint')
            body.add_geom(
                name=body_name(item),
                type=mujoco.mjtGeom.mjGEOM_CAPSULE,
                size=[item.radius, item.half_length, 0],
                quat=[math.sqrt(0.5), 0, math.sqrt(0.5), 0],  # axis along world x
                rgba=list(item.rgba),
                **OBJECT_CONTACT,
            )

    def sample_layout(self, seed: int) -> Layout:
        rng = np.random.default_rng(seed)
        pot = (*rng.uniform(*np.transpose([self.pot_x_range, self.pot_y_range])), TABLE_HEIGHT)
        while True:  # rejection sampling; succeeds within a few draws for these ranges
            xy = rng.uniform(*np.transpose([self.item_x_range, self.item_y_range]), size=(3, 2))
            gaps = [np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(i)]
            if min(gaps) >= self.min_item_gap and np.all(np.abs(xy[:, 0]) >= self.min_item_x):
                break
        positions = {'pot': tuple(float(v) for v in pot)}
        for item, (x, y) in zip(POT_ITEMS, xy, strict=True):
            positions[body_name(item)] = (float(x), float(y), TABLE_HEIGHT + item.radius + 0.001)
        return Layout(positions)

    def apply_layout(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> None:
        positions = dict(layout.positions)
        data.mocap_pos[model.body('pot').mocapid[0]] = positions.pop('pot')
        super().apply_layout(model, data, Layout(positions))

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, instruction: str) -> bool:
        item = self.target_item(instruction)
        pos = data.body(body_name(item)).xpos
        pot = data.mocap_pos[model.body('pot').mocapid[0]]
        inside_xy = np.linalg.norm(pos[:2] - pot[:2]) < POT_INNER_RADIUS
        return bool(inside_xy and pos[2] < pot[2] + POT_WALL_HEIGHT)


SCENES: dict[str, Scene] = {
    scene.name: scene for scene in (TransferCube(), Insertion(), PutXIntoPot())
}


def get_scene(name: str) -> Scene:
    """The scene called `name`, or ValueError listing the known ones."""
    if name not in SCENES:
        close = difflib.get_close_matches(name, SCENES, n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ValueError(f'unknown scene {name!r}; expected one of {list(SCENES)}.{hint}')
    return SCENES[name]


def add_robot_extras(spec: mujoco.MjSpec) -> None:
    """The real ALOHA's three cameras and a grasp site per gripper."""
    spec.worldbody.add_camera(
        name='cam_high',
        pos=list(HIGH_CAMERA_POS),
        fovy=HIGH_CAMERA_FOVY,
        xyaxes=camera_xyaxes(HIGH_CAMERA_POS, HIGH_CAMERA_TARGET, up=(0.0, 1.0, 0.0)),
    )
    for arm in robot.ARMS:
        gripper = spec.body(f'{MJ_ARM_PREFIX[arm]}/gripper_link')
        gripper.add_site(
            name=f'{MJ_ARM_PREFIX[arm]}/grasp',
            pos=list(GRASP_OFFSET),
            size=[0.005, 0, 0],
            rgba=[0, 0, 0, 0],
        )
        gripper.add_camera(
            name=f'cam_{arm}_wrist',
            pos=list(WRIST_CAMERA_POS),
            fovy=WRIST_CAMERA_FOVY,
            xyaxes=camera_xyaxes(WRIST_CAMERA_POS, WRIST_CAMERA_TARGET),
        )
    # Cameras close to the fingers need a near plane of about 1 cm, or the fingers are clipped;
    # no shadows or multisampling: 5x cheaper renders on a CPU (ENVIRONMENT.md).
    spec.visual.map.znear = 0.01
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
