from setuptools import find_packages, setup

package_name = 'aloha_sim'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='OFT ALOHA maintainers',
    maintainer_email='maintainers@oft-aloha.org',
    description='MuJoCo simulation of the bimanual ALOHA behind the real robot interface',
    license='Apache-2.0',
    # colcon test runs 0 tests with tests_require; the extra is what it reads.
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'aloha_sim = aloha_sim.aloha_sim_node:main',
            'scripted_demo = aloha_sim.scripted_demo_node:main',
        ]
    },
)
