"""A tiny metatomic model with two output variants, for the variant tests.

``energy/a`` and ``energy/b``: ``E_v = w_v sum_i |r_i|^2`` (w_a = 1, w_b = 2),
with direct forces ``-2 w_v r_i`` under ``non_conservative_force/a`` and
``/b``; no neighbour list, no stress.
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    System,
)

WEIGHTS = {"a": 1.0, "b": 2.0}


class _VariantModel(torch.nn.Module):
    def __init__(self, weights: Dict[str, float]):
        super().__init__()
        self.weights = weights

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        result: Dict[str, TensorMap] = {}
        device = systems[0].positions.device
        one = torch.zeros((1, 1), dtype=torch.int32, device=device)
        for name in outputs.keys():
            weight = self.weights[name.split("/")[1]]
            if name.startswith("energy"):
                values = torch.stack([weight * (s.positions**2).sum() for s in systems])
                samples = torch.arange(len(systems), dtype=torch.int32, device=device)
                block = TensorBlock(
                    values.reshape(-1, 1),
                    Labels("system", samples.reshape(-1, 1)),
                    [],
                    Labels("energy", one),
                )
            else:
                forces = torch.cat([-2.0 * weight * s.positions for s in systems])
                ids = [
                    torch.stack(
                        [
                            torch.full((len(s),), k, dtype=torch.int32, device=device),
                            torch.arange(len(s), dtype=torch.int32, device=device),
                        ],
                        dim=1,
                    )
                    for k, s in enumerate(systems)
                ]
                block = TensorBlock(
                    forces.reshape(-1, 3, 1),
                    Labels(["system", "atom"], torch.cat(ids)),
                    [Labels("xyz", torch.arange(3, device=device).reshape(-1, 1))],
                    Labels("non_conservative_force", one),
                )
            result[name] = TensorMap(Labels("_", one), [block])
        return result


def variant_model() -> AtomisticModel:
    outputs = {}
    for variant in WEIGHTS:
        description = f"toy variant {variant}"
        outputs[f"energy/{variant}"] = ModelOutput(
            unit="eV", sample_kind="system", description=description
        )
        outputs[f"non_conservative_force/{variant}"] = ModelOutput(
            unit="eV/A", sample_kind="atom", description=description
        )
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=[29],
        interaction_range=0.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    return AtomisticModel(_VariantModel(WEIGHTS).eval(), ModelMetadata(), capabilities)
