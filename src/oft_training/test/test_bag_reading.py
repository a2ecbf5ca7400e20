"""The fast path of reading bags: MCAP files read in place, and sensor_msgs/Image parsed from CDR
without copying its pixels, checked against rosbags (the reference reader and serializer)."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from oft_training.convert import main as convert
from oft_training.data import topics
from oft_training.data.mcap_file import McapError, McapFile
from oft_training.data.rosbag_episode import _header_only, _image, make_typestore
from oft_training.data.training_set import TrainingSet
from oft_training.testing import BagSpec, write_bag


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zstd_chunks'])
def test_mcap_file_holds_what_rosbags_reads(tmp_path, compressed):
    bag = write_bag(tmp_path / 'bag', BagSpec(seconds=1.0), compressed=compressed)
    with Reader(bag) as reader:
        expected = sorted((c.topic, t, bytes(raw)) for c, t, raw in reader.messages())
    with McapFile(next(bag.glob('*.mcap'))) as file:
        got = sorted(
            (file.channels[int(c)].topic, int(t), bytes(file.data(i)))
            for i, (c, t) in enumerate(zip(file.channel_ids, file.log_times, strict=True))
        )
        assert {ch.msgtype for ch in file.channels.values()} >= {topics.IMAGE}
    assert len(got) == len(expected) and got == expected


def test_compressed_bag_converts_to_the_same_episode(tmp_path):
    for name, compressed in (('plain', False), ('zstd', True)):
        write_bag(tmp_path / 'bags' / name / 'episode', BagSpec(), compressed=compressed)
        args = [str(tmp_path / 'bags' / name), '--out', str(tmp_path / name), '--preset', 'tiny']
        assert convert(args) == 0
    plain, zstd = TrainingSet(tmp_path / 'plain'), TrainingSet(tmp_path / 'zstd')
    for stem, array in plain.episode_arrays(0).items():
        np.testing.assert_array_equal(zstd.episode_arrays(0)[stem], array)


@pytest.mark.parametrize('frame_id', ['', 'a', 'cam', 'camera_link', 'abcdefg'])
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'rgba8'])
def test_image_from_cdr_matches_rosbags(frame_id, encoding):
    """Every alignment of the fields after frame_id and encoding (string lengths 1-12)."""
    store = make_typestore()
    t = store.types
    channels = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4}[encoding]
    height, width = 3, 5
    step = width * channels + 2  # padded rows
    data = np.arange(height * step, dtype=np.uint8)
    msg = t[topics.IMAGE](
        header=t['std_msgs/msg/Header'](
            stamp=t['builtin_interfaces/msg/Time'](sec=1234, nanosec=5678), frame_id=frame_id
        ),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )
    raw = memoryview(store.serialize_cdr(msg, topics.IMAGE))
    image = _image(raw, store)
    assert (image.height, image.width, image.encoding, image.step) == (
        height,
        width,
        encoding,
        step,
    )
    np.testing.assert_array_equal(image.data, data)
    stamp = _header_only(raw, store, topics.IMAGE).header.stamp
    assert (stamp.sec, stamp.nanosec) == (1234, 5678)


def test_not_mcap_and_cut_short(tmp_path):
    (tmp_path / 'text.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(McapError, match='no magic bytes'):
        McapFile(tmp_path / 'text.mcap')
    bag = write_bag(tmp_path / 'bag', BagSpec(seconds=1.0))
    path = next(bag.glob('*.mcap'))
    path.write_bytes(path.read_bytes()[:-100_000])
    with pytest.raises(McapError, match='truncated'):
        McapFile(path)
