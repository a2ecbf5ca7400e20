"""Repository-wide pytest configuration: every run gets an isolated, loopback-only DDS."""

pytest_plugins = ['tests.dds_isolation', 'tests.ros_fixtures']
