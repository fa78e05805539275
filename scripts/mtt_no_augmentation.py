"""Run metatrain's ``mtt`` with PET's rotational augmentation switched off.

    python scripts/mtt_no_augmentation.py train options.yaml -o model.pt

metatrain's PET trainer always applies a random O(3) rotation to every
training batch (``O3Augmenter``); the paper's control experiment trains the
same model without it. This wrapper replaces the augmenter's random step by
the identity, then hands over to ``mtt`` unchanged.
"""

import sys

import metatrain.pet.trainer as pet_trainer
from metatrain.__main__ import main
from metatrain.utils.augmentation import O3Augmenter


class IdentityAugmenter(O3Augmenter):
    """An augmenter that leaves systems and targets as they are."""

    def apply_random_augmentations(self, systems, targets, extra_data=None):
        return systems, targets, ({} if extra_data is None else extra_data)


pet_trainer.O3Augmenter = IdentityAugmenter

if __name__ == "__main__":
    sys.argv[0] = "mtt"
    sys.exit(main())
