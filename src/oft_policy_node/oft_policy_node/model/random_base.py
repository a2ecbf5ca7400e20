"""A random-weight base OpenVLA checkpoint in the exported layout, for tests and benchmarks.

`write_random_openvla_base` writes what `openvla/openvla-7b` ships as far as this stack reads
it: bf16 safetensors shards named and split as transformers' `save_pretrained(max_shard_size=
"7GB")` splits them (huggingface_hub `split_torch_state_dict_into_shards`: tensors in order, a
new shard when the next one would pass the limit), their `model.safetensors.index.json`, and a
Llama-2-format tokenizer (`write_llama_tokenizer`). Shards are streamed tensor by tensor, so
writing the 15 GB checkpoint holds one tensor in memory, not a shard.

The safetensors format (huggingface/safetensors README, "Format"): an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
{...}} padded with spaces to a multiple of 8 bytes, then the tensors' bytes, contiguous.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from oft_policy_node.model.config import OftConfig

Layout = list[tuple[str, tuple[int, ...]]]
MAX_SHARD_BYTES = 7_000_000_000  # the exporter's max_shard_size="7GB"
_DTYPE_NAMES = {torch.bfloat16: 'BF16', torch.float16: 'F16', torch.float32: 'F32'}
# Corpus of the small Llama-format tokenizer: the prompts this stack writes.
TOKENIZER_CORPUS = (
    'put green pepper into pot',
    'put red pepper into pot',
    'put yellow corn into pot',
    'take the lid off the pot',
    'pick up the cube',
    'In: What action should the robot take to open the drawer?\nOut:',
)


def read_tensor_layout(path: str | Path) -> Layout:
    """`name AxBxC` lines (comments start with #) -> [(name, shape)] in file order."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith('#'):
            name, shape = line.split()
            rows.append((name, tuple(int(n) for n in shape.split('x'))))
    return rows


def openvla_layout(cfg: OftConfig) -> Layout:
    """The exported base's tensors for any config, in the export's order: for openvla-7b
    exactly test/data/openvla_7b_tensors.txt (tested), for smaller configs the same names at
    their widths (a tiny base to train from in tests, the real widths with the Llama cut)."""
    rows: Layout = []
    for prefix, vit, dino in (
        ('vision_backbone.featurizer.', cfg.dino, True),
        ('vision_backbone.fused_featurizer.', cfg.siglip, False),
    ):
        h, m, p = vit.hidden_size, vit.intermediate_size, cfg.patch_size
        if dino:
            rows += [
                (prefix + 'cls_token', (1, 1, h)),
                (prefix + 'reg_token', (1, vit.num_registers, h)),
            ]
        rows += [
            (prefix + 'pos_embed', (1, cfg.patches_per_image, h)),
            (prefix + 'patch_embed.proj.weight', (h, 3, p, p)),
            (prefix + 'patch_embed.proj.bias', (h,)),
        ]
        for i in range(vit.num_layers):
            b = f'{prefix}blocks.{i}.'
            rows += [
                (b + 'norm1.weight', (h,)),
                (b + 'norm1.bias', (h,)),
                (b + 'attn.qkv.weight', (3 * h, h)),
                (b + 'attn.qkv.bias', (3 * h,)),
                (b + 'attn.proj.weight', (h, h)),
                (b + 'attn.proj.bias', (h,)),
                *([(b + 'ls1.scale_factor', (h,))] if dino else []),
                (b + 'norm2.weight', (h,)),
                (b + 'norm2.bias', (h,)),
                (b + 'mlp.fc1.weight', (m, h)),
                (b + 'mlp.fc1.bias', (m,)),
                (b + 'mlp.fc2.weight', (h, m)),
                (b + 'mlp.fc2.bias', (h,)),
                *([(b + 'ls2.scale_factor', (h,))] if dino else []),
            ]
        rows += [(prefix + 'norm.weight', (h,)), (prefix + 'norm.bias', (h,))]
        if not dino:  # SigLIP's attention-pooling head: exported, never used by OpenVLA
            pool = prefix + 'attn_pool.'
            rows += [
                (pool + 'latent', (1, 1, h)),
                (pool + 'q.weight', (h, h)),
                (pool + 'q.bias', (h,)),
                (pool + 'kv.weight', (2 * h, h)),
                (pool + 'kv.bias', (2 * h,)),
                (pool + 'proj.weight', (h, h)),
                (pool + 'proj.bias', (h,)),
                (pool + 'norm.weight', (h,)),
                (pool + 'norm.bias', (h,)),
                (pool + 'mlp.fc1.weight', (m, h)),
                (pool + 'mlp.fc1.bias', (m,)),
                (pool + 'mlp.fc2.weight', (h, m)),
                (pool + 'mlp.fc2.bias', (h,)),
            ]
    f, h = cfg.vision_dim, cfg.llm.hidden_size
    rows += [
        ('projector.fc1.weight', (4 * f, f)),
        ('projector.fc1.bias', (4 * f,)),
        ('projector.fc2.weight', (h, 4 * f)),
        ('projector.fc2.bias', (h,)),
        ('projector.fc3.weight', (h, h)),
        ('projector.fc3.bias', (h,)),
    ]
    llm, m = 'language_model.model.', cfg.llm.intermediate_size
    rows.append((llm + 'embed_tokens.weight', (cfg.llm.vocab_size, h)))
    for i in range(cfg.llm.num_layers):
        b = f'{llm}layers.{i}.'
        rows += [(b + f'self_attn.{x}_proj.weight', (h, h)) for x in 'qkvo']
        rows += [
            (b + 'mlp.gate_proj.weight', (m, h)),
            (b + 'mlp.up_proj.weight', (m, h)),
            (b + 'mlp.down_proj.weight', (h, m)),
            (b + 'input_layernorm.weight', (h,)),
            (b + 'post_attention_layernorm.weight', (h,)),
        ]
    rows += [
        (llm + 'norm.weight', (h,)),
        ('language_model.lm_head.weight', (cfg.llm.vocab_size, h)),
    ]
    return rows


def split_into_shards(
    layout: Layout, element_size: int, max_bytes: int = MAX_SHARD_BYTES
) -> list[Layout]:
    """huggingface_hub's split: in order, a new shard when the next tensor would pass max."""
    shards: list[Layout] = [[]]
    size = 0
    for name, shape in layout:
        nbytes = torch.Size(shape).numel() * element_size
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def write_streamed_safetensors(
    path: str | Path,
    layout: Layout,
    make: Callable[[str, tuple[int, ...]], torch.Tensor],
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Write one safetensors file whose tensors `make(name, shape)` creates one at a time, in
    `layout` order; returns the bytes of tensor data."""
    header: dict[str, object] = {'__metadata__': {'format': 'pt'}}
    offset = 0
    element = torch.empty((), dtype=dtype).element_size()
    for name, shape in layout:
        nbytes = torch.Size(shape).numel() * element
        header[name] = {
            'dtype': _DTYPE_NAMES[dtype],
            'shape': list(shape),
            'data_offsets': [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(',', ':')).encode()
    encoded += b' ' * (-len(encoded) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(encoded)))
        f.write(encoded)
        for name, shape in layout:
            tensor = make(name, shape).to(dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f'{name}: made shape {tuple(tensor.shape)}, layout {shape}')
            f.write(tensor.view(torch.uint8).numpy().tobytes())
    return offset


def random_tensor_maker(seed: int = 0) -> Callable[[str, tuple[int, ...]], torch.Tensor]:
    """Weights of a plausible scale (the forward pass stays finite through 32 layers): norm
    weights 1, LayerScale 0.1, everything else N(0, 0.02)."""
    generator = torch.Generator().manual_seed(seed)

    def make(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name.endswith(('scale_factor', 'gamma')):
            return torch.full(shape, 0.1)
        if len(shape) == 1 and name.endswith('.weight') and 'norm' in name:
            return torch.ones(shape)
        return torch.randn(shape, generator=generator) * 0.02

    return make


def write_random_openvla_base(
    directory: str | Path,
    layout: Layout,
    seed: int = 0,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    on_shard: Callable[[str, int], None] | None = None,
) -> Path:
    """Shards model-0000i-of-0000n.safetensors (bf16), their index and a tokenizer.

    `on_shard(file name, bytes)` is told as each shard is finished (progress for 15 GB)."""
    shards = split_into_shards(layout, 2, max_shard_bytes)
    write_sharded(directory, shards, random_tensor_maker(seed), on_shard=on_shard)
    write_llama_tokenizer(directory)
    return Path(directory)


def write_sharded(
    directory: str | Path,
    shards: list[Layout],
    make: Callable[[str, tuple[int, ...]], torch.Tensor],
    dtype: torch.dtype = torch.bfloat16,
    on_shard: Callable[[str, int], None] | None = None,
) -> Path:
    """save_pretrained's layout: one model-0000i-of-0000n.safetensors per shard (tensors from
    `make`, streamed) and model.safetensors.index.json {metadata.total_size, weight_map}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        name = f'model-{i:05d}-of-{len(shards):05d}.safetensors'
        nbytes = write_streamed_safetensors(directory / name, shard, make, dtype)
        weight_map.update(dict.fromkeys((n for n, _ in shard), name))
        total += nbytes
        if on_shard is not None:
            on_shard(name, nbytes)
    index = {'metadata': {'total_size': total}, 'weight_map': weight_map}
    (directory / 'model.safetensors.index.json').write_text(json.dumps(index, indent=2) + '\n')
    return directory


def write_llama_tokenizer(
    directory: str | Path, corpus: Sequence[str] = TOKENIZER_CORPUS, vocab_size: int = 330
) -> Path:
    """Train and save a Llama-2-format tokenizer (the files openvla/openvla-7b ships): byte-
    fallback BPE over '▁'-marked words, ids 0..2 for <unk> <s> </s>, 3..258 for the 256 byte
    tokens, a BOS-adding post-processor, and OpenVLA's tokenizer_config.json (LlamaTokenizer,
    <PAD> added after the vocabulary). Small: the real one has 32000 pieces."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    tok = Tokenizer(models.BPE(unk_token='<unk>', byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend('▁'), normalizers.Replace(' ', '▁')]
    )
    tok.pre_tokenizer = pre_tokenizers.Split('▁', behavior='merged_with_next')  # training only
    special = ['<unk>', '<s>', '</s>', *(f'<0x{i:02X}>' for i in range(256))]
    tok.train_from_iterator(
        list(corpus) * 4,
        BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False),
    )
    tok.pre_tokenizer = None  # Llama-2's tokenizer.json has none
    tok.post_processor = processors.TemplateProcessing(
        single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', 1)]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace('▁', ' '),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(' ', 1, 0),
        ]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token='<s>',
        eos_token='</s>',
        unk_token='<unk>',
        pad_token='<PAD>',
    ).save_pretrained(str(directory))
    config_file = directory / 'tokenizer_config.json'
    config = json.loads(config_file.read_text())
    config.update(
        tokenizer_class='LlamaTokenizer', add_bos_token=True, add_eos_token=False, legacy=False
    )
    config_file.write_text(json.dumps(config, indent=2))
    return directory
