"""Checkpoints of the authors' fine-tuning code (import_oft, OftPolicy.from_oft_run).

The fixture (test/data/openvla_oft_run/) was written by the authors' own code, not from anyone's
reading of it: scripts/fixtures/openvla_oft_run.py builds a tiny OpenVLA with timm 0.9.10's real
ViT classes and peft 0.11.1, runs finetune.py's setup for ALOHA OFT+ (3 images, proprio, FiLM,
L1 head, LoRA rank 32) and its `save_training_checkpoint`, then records what their deployment
code (get_vla, _apply_film_to_vla, predict_action with their fork's bidirectional attention)
computes for fixed inputs. real_size_tensors.txt.gz lists every tensor name and shape those
files hold at openvla-7b's real sizes.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from oft_policy_node import robot
from oft_policy_node.import_oft import main as import_main
from oft_policy_node.model import CheckpointError, OftPolicy
from oft_policy_node.model.openvla_oft_mapping import (
    adapter_entry,
    base_layout,
    component_tensors,
    vision_tensors,
)
from oft_policy_node.model.openvla_oft_run import (
    RunOptions,
    expected_tensors,
    find_run,
    is_oft_run,
    llm_config,
    model_config,
    vision_shapes,
)
from oft_policy_node.model.random_base import read_tensor_layout
from oft_policy_node.model.testing import one_torch_thread

DATA = Path(__file__).resolve().parent / 'data'
FIXTURE = DATA / 'openvla_oft_run'
RUN = FIXTURE / 'run--1000_chkpt'
TASK = 'put green pepper into pot'
DATASET = 'aloha1_put_X_into_pot_300_demos'


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope='module')
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / 'expected.safetensors'))


def observation(expected) -> tuple[dict[str, np.ndarray], np.ndarray]:
    images = expected['images'].numpy()
    return dict(zip(robot.CAMERAS, images, strict=True)), expected['state'].numpy()


@pytest.fixture(scope='module')
def policy() -> OftPolicy:
    # The fixture's images are 224 x 224 already and fed uncropped (as the authors' processor
    # gets them after their crop), so the chunk compares the network and the layout.
    with one_torch_thread():
        return OftPolicy.from_oft_run(RUN, options=RunOptions(center_crop=False))


def unmerged_copy(tmp_path: Path) -> Path:
    """The run as --merge_lora_during_training False leaves it: no merged shards."""
    run = tmp_path / 'run--1000_chkpt'
    shutil.copytree(RUN, run)
    for name in ('model.safetensors', 'config.json', 'generation_config.json'):
        (run / name).unlink()
    return run


def test_fixture_is_the_run_folder_finetune_writes():
    run = find_run(RUN)
    assert is_oft_run(RUN) and not is_oft_run(FIXTURE / 'base')
    assert (run.step, run.merged, run.use_film) == ('1000', True, True)
    assert sorted(run.parts) == ['action_head', 'proprio_projector', 'vision_backbone']
    adapter = json.loads((RUN / 'lora_adapter' / 'adapter_config.json').read_text())
    assert (adapter['r'], adapter['lora_alpha'], adapter['init_lora_weights']) == (
        32,
        16,
        'gaussian',
    )
    # "all-linear" matched by name: the patch embedding's Conv2d `proj` and the LM head too.
    assert {'proj', 'qkv', 'lm_head', 'fc3', 'q_proj'} <= set(adapter['target_modules'])


def test_the_authors_merge_leaves_the_vit_lora_out_of_the_merged_shards():
    """Why the vision backbone file is the truth for the ViTs: the merged shards hold the
    base's ViT weights (the adapter's FiLM-nested keys do not load), but the merged Llama and
    projector, while the vision file's LoRA is trained (B != 0)."""
    with (
        safe_open(str(FIXTURE / 'base' / 'model.safetensors'), 'pt') as base,
        safe_open(str(RUN / 'model.safetensors'), 'pt') as merged,
    ):
        for key in base.keys():  # noqa: SIM118
            same = torch.equal(base.get_tensor(key), merged.get_tensor(key))
            if key.startswith('vision_backbone.'):
                assert same, key
            elif key.endswith('.weight') and 'embed_tokens' not in key and 'norm' not in key:
                assert not same, key  # every LoRA-targeted linear layer moved
    vision = torch.load(RUN / 'vision_backbone--1000_checkpoint.pt', weights_only=True)
    lora_b = vision['vision_backbone.featurizer.blocks.0.block.attn.qkv.lora_B.default.weight']
    assert lora_b.abs().max() > 0


def test_components_compute_what_the_authors_modules_compute(policy, expected):
    network = policy.network
    with torch.no_grad():
        head = network.action_head(expected['head_input'].reshape(1, 25, -1))
        proprio = network.proprio_projector(expected['proprio_input'])
        pixels = expected['images'].permute(0, 3, 1, 2).float()[None] / 255.0
        film = network.vision.film_params(expected['film_language'].mean(1))
        features = network.vision(pixels, film)
    torch.testing.assert_close(head, expected['head_output'], rtol=0, atol=1e-6)
    torch.testing.assert_close(proprio, expected['proprio_output'], rtol=0, atol=1e-6)
    # Both ViTs with their merged LoRA (the patch embeddings' convolutional one included)
    # and FiLM, against FiLMedPrismaticVisionBackbone.
    torch.testing.assert_close(features, expected['film_features'], rtol=0, atol=2e-5)


def test_the_imported_chunk_is_the_authors_predict_action(policy, expected):
    images, state = observation(expected)
    chunk = policy.predict_action_chunk(images, state, TASK)
    assert chunk.shape == (25, 14)
    np.testing.assert_allclose(chunk, expected['actions'].numpy(), rtol=0, atol=1e-5)
    ids, _ = policy.tokenize([TASK])
    assert [1, *ids[0].tolist()] == [*expected['input_ids'][0].tolist(), 29871]


def test_without_the_authors_layout_the_chunk_differs(policy, expected):
    """The check above can fail: the same weights in this stack's own layout (no stop token,
    the slots' own states, FiLM over the prompt only) give another chunk, by far more than the
    tolerance the match is held to (1e-5; the tiny random model moves little either way)."""
    images, state = observation(expected)
    policy.config = policy.config.replace(sequence_layout='stack')
    policy.network.cfg = policy.config
    policy.reset()
    try:
        chunk = policy.predict_action_chunk(images, state, TASK)
    finally:
        policy.config = policy.network.cfg = policy.config.replace(sequence_layout='openvla_oft')
        policy.reset()
    assert np.abs(chunk - expected['actions'].numpy()).max() > 2e-4


def test_a_run_merged_offline_needs_its_base_and_then_matches(tmp_path, expected):
    run = unmerged_copy(tmp_path)
    with pytest.raises(CheckpointError, match='--merge_lora_during_training False.*--base'):
        OftPolicy.from_oft_run(run)
    policy = OftPolicy.from_oft_run(
        run, options=RunOptions(base=FIXTURE / 'base', center_crop=False)
    )
    images, state = observation(expected)
    # Merged here in float32; the authors' shards were merged in bf16.
    chunk = policy.predict_action_chunk(images, state, TASK)
    np.testing.assert_allclose(chunk, expected['actions'].numpy(), rtol=0, atol=1e-4)


def test_import_writes_a_checkpoint_that_runs_the_same(tmp_path, expected, capsys):
    out = tmp_path / 'imported'
    code = import_main(
        [
            str(RUN),
            '--out',
            str(out),
            '--no-center-crop',
            '--dtype',
            'float32',
            '--instruction',
            TASK,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert f'checkpoint:={out}' in capsys.readouterr().out
    policy = OftPolicy.from_pretrained(out)
    config = json.loads((out / 'config.json').read_text())
    assert (config['sequence_layout'], config['image_pipeline'], config['lora_rank']) == (
        'openvla_oft',
        'openvla_oft',
        0,
    )
    assert config['extra']['unnorm_key'] == DATASET and config['extra']['step'] == '1000'
    assert policy.instructions == (TASK,)
    images, state = observation(expected)
    chunk = policy.predict_action_chunk(images, state, TASK)
    np.testing.assert_allclose(chunk, expected['actions'].numpy(), rtol=0, atol=1e-5)


def test_from_pretrained_reads_a_run_folder_with_the_defaults():
    """What policy_node checkpoint:=RUN_DIR loads: the only step and dataset, centre crop."""
    config = OftPolicy.from_pretrained(RUN).config
    assert (config.image_pipeline, config.crop_scale) == ('openvla_oft', 0.9)
    assert config.extra['unnorm_key'] == DATASET


def test_the_statistics_keep_the_mask_and_choose_bounds(policy):
    stats = json.loads((RUN / 'dataset_statistics.json').read_text())[DATASET]
    np.testing.assert_array_equal(policy.stats.action_min, np.float32(stats['action']['min']))
    np.testing.assert_array_equal(policy.stats.action_mask, stats['action']['mask'])
    assert not policy.stats.action_mask[5] and policy.stats.proprio_mask is None
    q99 = OftPolicy.from_oft_run(RUN, options=RunOptions(normalization='bounds_q99'))
    np.testing.assert_array_equal(q99.stats.proprio_max, np.float32(stats['proprio']['q99']))


def edited_run(tmp_path: Path, edit) -> Path:
    run = tmp_path / 'run--1000_chkpt'
    shutil.copytree(RUN, run)
    edit(run)
    return run


def _resave(run: Path, part: str, change) -> None:
    path = run / f'{part}--1000_checkpoint.pt'
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ('edit', 'message'),
    [
        (
            lambda run: _resave(
                run,
                'action_head',
                lambda s: s.update(
                    {
                        'module.model.fc2.weight': s['module.model.fc2.weight'][:7],
                        'module.model.fc2.bias': s['module.model.fc2.bias'][:7],
                    }
                ),
            ),
            'action head predicts 7-D vectors; this stack drives a bimanual ALOHA, 14-D',
        ),
        (
            lambda run: (run / 'noisy_action_projector--1000_checkpoint.pt').write_bytes(b''),
            'a diffusion run',
        ),
        (
            lambda run: shutil.copy(
                run / 'action_head--1000_checkpoint.pt', run / 'action_head--2000_checkpoint.pt'
            ),
            r"holds steps \['1000', '2000'\]; choose one \(--step\)",
        ),
        (
            lambda run: (run / 'proprio_projector--1000_checkpoint.pt').unlink(),
            'no proprio_projector--1000_checkpoint.pt',
        ),
        (
            lambda run: _resave(
                run,
                'vision_backbone',
                lambda s: s.pop('vision_backbone.fused_featurizer.blocks.1.scale.bias'),
            ),
            r"lacks 1 tensors, e.g. \['vision.siglip_film.scale.1.bias'\]",
        ),
        (
            lambda run: _resave(
                run, 'proprio_projector', lambda s: s.update({'module.fc3.weight': torch.ones(2)})
            ),
            r"projector--1000_checkpoint.pt: tensor maps to 'proprio_projector.fc3.weight'",
        ),
        (
            lambda run: (run / 'dataset_statistics.json').write_text(
                json.dumps({'a': {}, 'b': {}})
            ),
            r"holds datasets \['a', 'b'\]; choose --unnorm-key",
        ),
    ],
    ids=['libero-head', 'diffusion', 'two-steps', 'no-proprio', 'missing', 'extra', 'two-keys'],
)
def test_a_run_that_does_not_fit_fails_naming_why(tmp_path, edit, message):
    run = edited_run(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        OftPolicy.from_oft_run(run)


def test_the_step_and_key_can_be_chosen_and_the_cli_says_what_is_wrong(tmp_path, capsys):
    run = edited_run(
        tmp_path,
        lambda r: shutil.copy(
            r / 'action_head--1000_checkpoint.pt', r / 'action_head--2000_checkpoint.pt'
        ),
    )
    assert (
        OftPolicy.from_oft_run(run, options=RunOptions(step=1000)).config.extra['step'] == '1000'
    )
    assert import_main([str(run), '--out', str(tmp_path / 'x'), '--step', '5']) == 2
    assert "no step 5; it holds ['1000', '2000']" in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def _real_size_files() -> dict[str, dict[str, tuple[int, ...]]]:
    files: dict[str, dict[str, tuple[int, ...]]] = {}
    with gzip.open(FIXTURE / 'real_size_tensors.txt.gz', 'rt') as f:
        for line in f:
            name, key, shape, _ = line.rstrip('\n').split('\t')
            files.setdefault(name, {})[key] = tuple(json.loads(shape))
    return files


def test_every_tensor_maps_at_the_real_sizes():
    """openvla-7b's widths: the vision file, the heads and the merged shards (the base
    layout, openvla_7b_tensors.txt) map onto exactly the tensors of the imported model."""
    files = _real_size_files()

    def meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        return {k: torch.empty(s, device='meta') for k, s in shapes.items()}

    vision = files['vision_backbone--1000_checkpoint.pt']
    mapped = list(vision_tensors(meta(vision), 'vision', lambda rank: 16 / rank))
    for key, shape in read_tensor_layout(DATA / 'openvla_7b_tensors.txt'):
        if not key.startswith('vision_backbone.'):
            mapped += base_layout(key, torch.empty(shape, device='meta'), 'shards')
    for part in ('proprio_projector', 'action_head'):
        mapped += component_tensors(part, meta(files[f'{part}--1000_checkpoint.pt']), part)
    shapes = vision_shapes(vision.items())
    config = model_config(
        {
            'timm_model_ids': [
                'vit_large_patch14_reg4_dinov2.lvd142m',
                'vit_so400m_patch14_siglip_224',
            ],
            'image_sizes': [224, 224],
            'text_config': {'model_type': 'llama', 'vocab_size': 32064},
        },
        shapes,
        14,
        14,
        2,
        use_film=True,
        chunk_size=25,
        center_crop=True,
    )
    expected = expected_tensors(config)
    got = {key: tuple(t.shape) for key, t, _ in mapped}
    assert len(got) == len(mapped), 'a tensor was given twice'
    assert set(expected) - set(got) == {'vision.dino.embeddings.mask_token'}
    assert {k: got[k] for k in got} == {k: expected[k] for k in got}
    assert (config.dino.num_layers, config.siglip.num_layers, config.llm.num_layers) == (
        24,
        27,
        32,
    )


def test_every_adapter_tensor_names_a_layer_of_the_base_at_the_real_sizes():
    base = {key for key, _ in read_tensor_layout(DATA / 'openvla_7b_tensors.txt')}
    entries = [
        adapter_entry(key, 'adapter')
        for key in _real_size_files()['lora_adapter/adapter_model.safetensors']
    ]
    modules = {entry[0] for entry in entries if entry is not None}
    assert entries.count(None) == 1  # the LM head's saved copy
    assert {f'{m}.weight' for m in modules} <= base
    assert 'vision_backbone.featurizer.patch_embed.proj' in modules


def test_the_real_text_config_is_llama_defaults_with_eps_1e6():
    llm = llm_config({'model_type': 'llama', 'vocab_size': 32064, 'pad_token_id': 32000})
    assert (llm.hidden_size, llm.num_heads, llm.rms_norm_eps) == (4096, 32, 1e-6)
