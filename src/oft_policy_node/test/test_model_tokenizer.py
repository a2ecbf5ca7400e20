"""The Llama tokenizer of real checkpoints (`HfTokenizer`), on a small Llama-2-format tokenizer
trained here with the `tokenizers` library (`random_base.write_llama_tokenizer`: byte-fallback
BPE over '▁'-marked words, ids 0..2 for <unk> <s> </s>, 3..258 for the 256 byte tokens, a
BOS-adding post-processor, and OpenVLA's tokenizer_config.json: LlamaTokenizer, <PAD> added
after the vocabulary)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from oft_policy_node import robot
from oft_policy_node.model import CheckpointError, NormStats, OftPolicy, get_preset
from oft_policy_node.model.random_base import write_llama_tokenizer
from oft_policy_node.model.testing import (
    DEFAULT_INSTRUCTIONS,
    one_torch_thread,
    random_observation,
    randomize_film,
)
from oft_policy_node.model.tokenizer import HfTokenizer

CFG = get_preset('tiny').replace(tokenizer='pretrained')
VOCAB = 330  # 3 special + 256 byte tokens + 71 learned pieces; the tiny Llama has 515 rows
GREEN, RED = DEFAULT_INSTRUCTIONS[:2]


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope='module')
def tokenizer_dir(tmp_path_factory):
    return write_llama_tokenizer(tmp_path_factory.mktemp('llama_tokenizer'))


@pytest.fixture(scope='module')
def checkpoint_dir(tokenizer_dir, tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        policy = OftPolicy(
            CFG,
            tokenizer=HfTokenizer(tokenizer_dir),
            stats=NormStats.from_limits(*robot.action_limits()),
            instructions=DEFAULT_INSTRUCTIONS,
        )
        randomize_film(policy)
    return policy.save_pretrained(tmp_path_factory.mktemp('ckpt'))


@pytest.fixture
def policy(checkpoint_dir):
    return OftPolicy.from_pretrained(checkpoint_dir)


def test_reads_llama_special_tokens_and_vocabulary(tokenizer_dir):
    tok = HfTokenizer(tokenizer_dir)
    assert (tok.bos_token_id, tok.vocab_size) == (1, VOCAB)
    assert tok.pad_token_id == VOCAB  # OpenVLA's <PAD>, added after the text vocabulary


def test_prompt_ids_are_openvla_tokenisation_without_bos(policy, tokenizer_dir):
    """The network puts BOS first itself, so encode() must be exactly OpenVLA's ids minus BOS."""
    reference = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompt = policy.prompt(GREEN)
    ids = policy.tokenizer.encode(prompt)
    assert reference(prompt)['input_ids'] == [1, *ids]
    assert 1 not in ids and reference.decode(ids) == prompt
    assert reference.convert_ids_to_tokens(ids[0]).startswith('▁')  # SentencePiece word start
    unseen = policy.tokenizer.encode('put the crème brûlée into pot')  # bytes never trained
    assert any(3 <= i < 259 for i in unseen)  # byte-fallback ids, no <unk>
    assert 0 not in unseen and reference.decode(unseen) == 'put the crème brûlée into pot'
    bos = policy.conditioning(GREEN).bos  # (1, 1, H): the sequence's first embedding
    torch.testing.assert_close(bos[0, 0], policy.network.llm.get_input_embeddings().weight[1])


def test_the_prompt_is_openvlas_with_the_empty_token_after_out(policy, tokenizer_dir):
    """vla-scripts/deploy.py's prompt, then the token predict_action appends when the prompt
    does not already end with it (29871 in Llama-2's vocabulary: '▁')."""
    reference = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    instruction = 'Put Green Pepper Into Pot'
    assert policy.prompt(instruction) == (
        'In: What action should the robot take to put green pepper into pot?\nOut:'
    )
    ids, mask = policy.tokenize([instruction])
    expected = reference(policy.prompt(instruction), add_special_tokens=False)['input_ids']
    assert ids[0].tolist() == [*expected, reference.convert_tokens_to_ids('▁')]
    assert mask.all()


def test_padding_is_left_and_left_out_of_the_film_mean(policy):
    short, long = 'go', 'put the yellow corn into the big pot please'
    ids, mask = policy.tokenize([short, long])  # (2, T) each
    n_short = len(policy.tokenizer.encode(policy.prompt(short))) + 1  # + the empty token
    pad = ids.shape[1] - n_short
    assert pad > 0 and mask[1].all()
    assert not mask[0, :pad].any() and mask[0, pad:].all()
    assert (ids[0, :pad] == policy.tokenizer.pad_token_id).all()
    net = policy.network
    with torch.no_grad():
        both = net.condition(ids, mask, policy.tokenizer.bos_token_id).film
        alone = net.condition(*policy.tokenize([short]), policy.tokenizer.bos_token_id).film
        torch.testing.assert_close(both.dino_gamma[:1], alone.dino_gamma)
        torch.testing.assert_close(both.siglip_beta[:1], alone.siglip_beta)
        # The check can fail: a mean that counted the padding would give other FiLM params.
        padded_mean = net.llm.get_input_embeddings()(ids[:1]).mean(1)  # (1, H)
        assert not torch.allclose(
            net.vision.film_params(padded_mean).dino_gamma, alone.dino_gamma, atol=1e-4
        )


def test_checkpoint_with_tokenizer_round_trips_exactly(policy, tmp_path):
    with torch.no_grad():
        policy.network.action_head.fc2.bias += 0.1  # not the saved weights any more
    observation = random_observation(CFG, seed=3)
    expected = {text: policy.predict_action_chunk(*observation, text) for text in (GREEN, RED)}
    out = policy.save_pretrained(tmp_path / 'ckpt')
    assert {'tokenizer.json', 'tokenizer_config.json'} <= {p.name for p in out.iterdir()}
    loaded = OftPolicy.from_pretrained(out)
    assert isinstance(loaded.tokenizer, HfTokenizer)
    for part, tensor in zip(
        loaded.tokenize([GREEN, 'go']), policy.tokenize([GREEN, 'go']), strict=True
    ):
        assert torch.equal(part, tensor)
    for text, chunk in expected.items():
        np.testing.assert_array_equal(loaded.predict_action_chunk(*observation, text), chunk)
    assert np.abs(expected[GREEN] - expected[RED]).max() > 1e-3  # the prompt reaches the model


@pytest.mark.parametrize(
    'name, message',
    [
        ('tokenizer.json', r"ckpt: no tokenizer, missing \['tokenizer\.json'\]"),
        ('tokenizer_config.json', r"ckpt: no tokenizer, missing \['tokenizer_config\.json'\]"),
    ],
)
def test_missing_tokenizer_files_are_named(checkpoint_dir, tmp_path, name, message):
    ckpt = shutil.copytree(checkpoint_dir, tmp_path / 'ckpt')
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=message):
        OftPolicy.from_pretrained(ckpt)


@pytest.mark.parametrize(
    'change, message',
    [
        (
            {'llm': dataclasses.replace(CFG.llm, vocab_size=300)},
            r"'pad_token_id': 330.*llm\.vocab_size=300",
        ),
        ({'num_action_bins': 400}, 'vocab_size=330 is smaller than config.num_action_bins=400'),
    ],
)
def test_tokenizer_that_does_not_fit_the_model_is_refused(tokenizer_dir, change, message):
    with pytest.raises(ValueError, match=message):
        OftPolicy(CFG.replace(**change), tokenizer=HfTokenizer(tokenizer_dir))


def test_tokenizer_without_bos_is_refused(checkpoint_dir, tmp_path):
    ckpt = shutil.copytree(checkpoint_dir, tmp_path / 'ckpt')
    config_file = ckpt / 'tokenizer_config.json'
    config = json.loads(config_file.read_text())
    del config['bos_token']
    config_file.write_text(json.dumps({**config, 'tokenizer_class': 'PreTrainedTokenizerFast'}))
    with pytest.raises(CheckpointError, match=r'tokenizer_config\.json: the tokenizer has no BOS'):
        OftPolicy.from_pretrained(ckpt)
