"""Load a LeRobotDataset folder with LeRobot's own `LeRobotDataset` and read samples from it:
the check that an `export` is what LeRobot expects, beyond the layout tests of the suite.

LeRobot cannot live in the project's venv (it pins torch < 2.11), so its dataset code and the
readers it uses go into a scratch folder, on the venv's python, without their dependencies:

    source scripts/env.sh
    pip install --target /tmp/lerobot-check --no-deps lerobot==0.4.4 "datasets>=4,<5" pandas \\
        "huggingface-hub<0.36" fsspec multiprocess dill xxhash httpx httpcore h11 anyio sniffio \\
        certifi idna charset-normalizer urllib3 requests filelock jsonlines draccus==0.10.0 \\
        einops deepdiff orderly-set mergedeep typing-inspect mypy-extensions pyyaml-include \\
        toml hf-xet tzdata python-dateutil pillow tqdm pyyaml typing-extensions
    PYTHONPATH=/tmp/lerobot-check python scripts/check_lerobot_loader.py lerobot/pot

Two stand-ins, because this CPU torch build has no torchvision or torchcodec: an empty
`torchvision` module (LeRobot imports its transforms, unused here), and video frames decoded by
PyAV where LeRobot would call torchcodec, held to LeRobot's own timestamp tolerance. Everything
else is LeRobot's code: info.json, tasks, episodes and statistics through
LeRobotDatasetMetadata, the frame table through `datasets` with LeRobot's features, the
episode's video span from `from_timestamp`, and `delta_timestamps` action chunks.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import av
import numpy as np
import torch


def stub_torchvision() -> None:
    names = [
        'torchvision',
        'torchvision.transforms',
        'torchvision.transforms.v2',
        'torchvision.transforms.v2.functional',
        'torchvision.io',
    ]
    modules = {name: types.ModuleType(name) for name in names}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(modules[parent], child, module)
    for name in ('Transform', 'Compose', 'ColorJitter', 'RandomAffine', 'Resize'):
        setattr(modules['torchvision.transforms.v2'], name, type(name, (), {}))
    sys.modules.update(modules)


def decode_with_pyav(video_path, timestamps, tolerance_s, backend=None) -> torch.Tensor:
    """lerobot.datasets.video_utils.decode_video_frames' contract: (N, C, H, W) float in
    [0, 1], the frames nearest `timestamps`, each within `tolerance_s` or an error."""
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        decoded = [
            (float(f.pts * stream.time_base), f.to_ndarray(format='rgb24'))
            for f in container.decode(stream)
        ]
    times = np.array([t for t, _ in decoded])
    frames = []
    for ts in timestamps:
        i = int(np.argmin(np.abs(times - ts)))
        if abs(times[i] - ts) >= tolerance_s:
            raise ValueError(f'{video_path}: no frame within {tolerance_s} s of {ts} s')
        frames.append(torch.from_numpy(decoded[i][1]).permute(2, 0, 1).float() / 255)
    return torch.stack(frames)


def main(root: str) -> int:
    stub_torchvision()
    import lerobot.datasets.lerobot_dataset as lerobot_dataset

    lerobot_dataset.decode_video_frames = decode_with_pyav
    dataset = lerobot_dataset.LeRobotDataset('local/check', root=root)
    print(
        f'{root}: {dataset.num_episodes} episodes, {dataset.num_frames} frames at '
        f'{dataset.fps} fps, tasks {list(dataset.meta.tasks.index)}'
    )
    for index in (0, dataset.num_frames - 1):
        item = dataset[index]
        images = {k: tuple(v.shape) for k, v in item.items() if k.startswith('observation.images')}
        print(
            f'  frame {index}: episode {item["episode_index"].item()}, task {item["task"]!r}, '
            f'state {tuple(item["observation.state"].shape)}, images {images}'
        )
    chunks = lerobot_dataset.LeRobotDataset(
        'local/check', root=root, delta_timestamps={'action': [i / dataset.fps for i in range(25)]}
    )
    item = chunks[dataset.num_frames - 3]
    print(
        f'  25-step action chunk: {tuple(item["action"].shape)}, '
        f'{int(item["action_is_pad"].sum())} padded past the episode end'
    )
    print(f'  statistics: {sorted(dataset.meta.stats)}')
    print('LeRobot loads it.')
    return 0


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
