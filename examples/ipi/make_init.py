"""Write init.extxyz: the 3x3x3 fcc copper cell (108 atoms) the i-PI inputs run."""

from ase.build import bulk
from ase.io import write

atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
atoms.rattle(0.02, seed=0)
write("init.extxyz", atoms)
print("wrote init.extxyz (108 Cu atoms)")
