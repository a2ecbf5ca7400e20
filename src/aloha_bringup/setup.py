from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = 'aloha_bringup'
# The committed simulation policies (checkpoints/<scene> at the top of the repository), installed
# with the package so that the launch file's default checkpoint is found from any directory.
CHECKPOINTS = Path('../../checkpoints')
checkpoint_files = (
    [
        (
            f'share/{package_name}/checkpoints/{scene.name}',
            sorted(str(f) for f in scene.iterdir() if f.is_file()),
        )
        for scene in sorted(CHECKPOINTS.iterdir())
        if scene.is_dir()
    ]
    if CHECKPOINTS.is_dir()
    else []
)

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.*')),
        ('share/' + package_name + '/config/robots', glob('config/robots/*.yaml')),
        *checkpoint_files,
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='OFT ALOHA maintainers',
    maintainer_email='maintainers@oft-aloha.org',
    description='Launch files, robot and graph configuration, recording, closed-loop evaluation '
    'and the simulation training recipes',
    license='Apache-2.0',
    # colcon test runs 0 tests with tests_require; the extra is what it reads.
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'run_graph = aloha_bringup.run_graph:main',
            'record_bag = aloha_bringup.recorder_node:main',
            'record_graph = aloha_bringup.graph_recorder:main',
            'teleop = aloha_bringup.teleop_node:main',
            'record_demos = aloha_bringup.record_demos:main',
            'eval_sim = aloha_bringup.evaluation.eval_sim:main',
            'quick_eval = aloha_bringup.evaluation.quick_eval:main',
            'train_sim = aloha_bringup.recipes.train_sim:main',
            'pretrain_vision = aloha_bringup.recipes.pretrain_vision:main',
            'render_grounding = aloha_bringup.recipes.render_grounding:main',
        ]
    },
)
