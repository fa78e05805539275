"""The four structures the real pretrained models are checked on."""

from ase.build import bulk, fcc111, molecule
from ase.cluster import Icosahedron


def structures() -> dict:
    """Rattled (so without symmetry, and chiral): bulk, slab, cluster, molecule."""
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=1)
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.pbc = True
    slab.rattle(0.05, seed=2)
    cluster = Icosahedron("Cu", 2)
    cluster.center(vacuum=6.0)
    cluster.rattle(0.05, seed=3)
    ethanol = molecule("CH3CH2OH")
    ethanol.center(vacuum=6.0)
    ethanol.rattle(0.05, seed=4)
    return {"bulk": cell, "slab": slab, "cluster": cluster, "molecule": ethanol}
