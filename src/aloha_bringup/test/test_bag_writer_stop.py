"""A stop signal never cuts a bag record in two. Seen over DDS: Ctrl-C raised while the MCAP
writer was between a record's header and its data left a bag that `rosbags` could not read
past that record ("Truncated record"). The signal is sent here from inside the write itself,
so the test does not depend on when a scheduler happens to deliver it."""

from __future__ import annotations

import pytest

from tests.python_snippet import run_python

pytestmark = pytest.mark.ros  # bags of rclpy-serialized messages


def test_ctrl_c_inside_a_write_is_raised_after_the_message_is_whole(tmp_path):
    result = run_python(f"""
        import os, signal, time
        from aloha_bringup.recording import BagWriter
        from oft_policy_node.child_process import sigterm_as_ctrl_c
        from rclpy.serialization import serialize_message
        from std_msgs.msg import String
        from tests.bag_reading import bag_messages

        sigterm_as_ctrl_c()
        writer = BagWriter({str(tmp_path / 'bag')!r}, {{'/t': 'std_msgs/msg/String'}})
        real_write = writer._writer.write

        def write_with_ctrl_c(*args):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, before the record is written
            real_write(*args)

        writer._writer.write = write_with_ctrl_c
        written = 0
        try:
            for k in range(3):
                writer.write('/t', k, serialize_message(String(data=str(k))))
                written += 1
        except KeyboardInterrupt:
            print('stopped after', written, 'counted', writer.counts['/t'])
        writer._writer.write = real_write
        writer.close()
        print('read', len(bag_messages({str(tmp_path / 'bag')!r})['/t']))
        """)
    assert result.stdout.split('\n')[:2] == ['stopped after 0 counted 1', 'read 1'], (
        result.stdout + result.stderr
    )
