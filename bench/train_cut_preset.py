"""`train` with openvla-7b at its real widths but fewer ViT blocks and Llama layers, so a
two-rank run fits this machine's memory: `python -m bench.train_cut_preset VIT LLM <train
args>`, under torchrun like `oft_training.train` (bench_training_memory runs it)."""

from __future__ import annotations

import dataclasses
import sys

from oft_policy_node.model.config import PRESETS, OftConfig, get_preset


def cut_preset(vit_layers: int, llm_layers: int) -> OftConfig:
    full = get_preset('openvla-7b')
    return full.replace(
        name=f'openvla-7b-vit{vit_layers}-llm{llm_layers}',
        dino=dataclasses.replace(full.dino, num_layers=vit_layers),
        siglip=dataclasses.replace(full.siglip, num_layers=vit_layers),
        llm=dataclasses.replace(full.llm, num_layers=llm_layers),
    )


def main() -> int:
    vit, llm, *args = sys.argv[1:]
    config = cut_preset(int(vit), int(llm))
    PRESETS[config.name] = config
    from oft_training.train import main as train

    return train([*args, '--preset', config.name])


if __name__ == '__main__':
    sys.exit(main())
