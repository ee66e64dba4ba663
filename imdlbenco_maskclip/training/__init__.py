"""``benco train`` as named steps on Benco's ``train_one_epoch`` (``loop``), its typed settings
(``config``), the augmentations, the non-finite loss guard, the console progress, seeds and
determinism, and the CPU demo (``demo_run``), which trains and then tests.

May import ``evaluation`` (validation is the protocol's own code) and everything below it.
"""
