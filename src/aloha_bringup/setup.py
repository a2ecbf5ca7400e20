from glob import glob

from setuptools import find_packages, setup

package_name = 'aloha_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='OFT ALOHA maintainers',
    maintainer_email='maintainers@oft-aloha.org',
    description='Launch files, configuration and the MuJoCo ALOHA simulation',
    license='Apache-2.0',
    # colcon test runs 0 tests with tests_require; the extra is what it reads.
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'run_graph = aloha_bringup.run_graph:main',
            'aloha_sim = aloha_bringup.aloha_sim_node:main',
            'scripted_demo = aloha_bringup.scripted_demo_node:main',
            'record_bag = aloha_bringup.recorder_node:main',
            'record_demos = aloha_bringup.record_demos:main',
            'eval_sim = aloha_bringup.eval_sim:main',
            'quick_eval = aloha_bringup.quick_eval:main',
            'train_sim = aloha_bringup.train_sim:main',
            'pretrain_vision = aloha_bringup.pretrain_vision:main',
            'render_grounding = aloha_bringup.render_grounding:main',
        ],
    },
)
