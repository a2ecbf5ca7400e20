"""A device that is not there is one clear line (model/devices.py), for policy_node device:= and
train --device alike; the CUDA cases this CPU-only host cannot have are given to it by patching
what torch reports, the host's own answer is checked as it is."""

from __future__ import annotations

import pytest
import torch

from oft_policy_node.model.devices import DeviceError, resolve_device


def test_cpu_is_always_there():
    assert resolve_device('cpu') == torch.device('cpu')


@pytest.mark.parametrize(
    ('name', 'message'), [('gpu', "'gpu' is not a torch device"), ('meta', 'only cpu, cuda')]
)
def test_names_that_are_no_device(name, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason='this torch has CUDA')
def test_cuda_on_a_torch_without_cuda_says_so():
    with pytest.raises(DeviceError, match=r"'cuda': this torch \(.*\) was built without CUDA"):
        resolve_device('cuda')


def test_cuda_without_a_gpu_and_beyond_the_last_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, 'is_built', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    with pytest.raises(DeviceError, match='no CUDA GPU is visible'):
        resolve_device('cuda')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert resolve_device('cuda:0') == torch.device('cuda', 0)
    with pytest.raises(DeviceError, match=r"'cuda:3': this host has 1 CUDA GPU\(s\): cuda:0$"):
        resolve_device('cuda:3')
