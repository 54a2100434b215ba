"""tests/integration/tfcheck.py — what the Python integration tests of TensorFlow models (tf_models.py,
serve_tf_metadata.py) share: where ../shared/tf-models is, and the ok / FAIL tally they print and exit
with ("N passed, M failed", exit 1 when any failed)."""
import os
import sys


def tf_models_dir(root, given=None):
    """`given`, else ../shared/tf-models beside the project; /work/shared/tf-models when that is no directory"""
    d = given or os.path.join(root, '..', 'shared', 'tf-models')
    return d if os.path.isdir(d) else '/work/shared/tf-models'


class Tally:
    def __init__(self):
        self.passes = 0
        self.fails = 0

    def ok(self, cond, what, detail=''):
        if cond:
            self.passes += 1
            print(f'ok   {what}')
        else:
            self.fails += 1
            print(f'FAIL {what} {detail}')

    def finish(self):
        print(f'{self.passes} passed, {self.fails} failed')
        sys.exit(1 if self.fails else 0)
