"""Linear probes on the committed digit codes (issue 11, acceptance 3 diagnosis).

How much of the digit label the committed vq-digits codes carry, read by softmax regression:
one-hot (position, code) features, and a bag of codes without positions. Run from the repo
root: `python3 scripts/probe-digit-codes.py` (needs numpy). Prints train/held-out accuracy.
"""
import gzip
import struct

import numpy as np

b = gzip.open('models/assets/vq-digits/digit-codes.u16.gz').read()
assert b[:8] == b'MMCODES1'
count, n, cb = struct.unpack('<III', b[8:20])
codes = np.frombuffer(b[20:], dtype='<u2').reshape(count, n).astype(int)
labels = np.array([int(x) for x in open('models/assets/data/digits/labels.txt').read().split()])
split = open('models/assets/data/digits/split.txt').read().split()
tr = np.array([s.startswith('train') for s in split])
Y = np.eye(10)[labels]


def probe(name, X, iters, lr, decay):
    """Full-batch gradient descent on softmax regression over the training split."""
    W = np.zeros((X.shape[1], 10), np.float32)
    for _ in range(iters):
        z = X[tr] @ W
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        W -= lr * (X[tr].T @ (p - Y[tr]) / tr.sum() + decay * W)
    pred = (X @ W).argmax(1)
    print(f"{name}: train {(pred[tr] == labels[tr]).mean():.4f}, "
          f"held-out {(pred[~tr] == labels[~tr]).mean():.4f}")


onehot = np.zeros((count, n * cb), np.float32)
bag = np.zeros((count, cb), np.float32)
for i in range(count):
    onehot[i, np.arange(n) * cb + codes[i]] = 1
    np.add.at(bag[i], codes[i], 1.0 / 8)
probe('one-hot (position, code)', onehot, 300, 2.0, 1e-3)
probe('bag of codes', bag, 2000, 1.0, 1e-4)
