from glob import glob

from setuptools import find_packages, setup

package_name = 'oft_training'

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
    description='Demos to training sets, LoRA + FiLM + L1 fine-tuning and evaluation',
    license='Apache-2.0',
    # colcon test runs 0 tests with tests_require; the extra is what it reads.
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'convert = oft_training.convert:main',
            'export = oft_training.export:main',
            'train = oft_training.train:main',
            'evaluate = oft_training.evaluate:main',
        ]
    },
)
